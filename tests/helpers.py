"""Small real inputs for tests: synthetic photos and tiny training configs."""

from __future__ import annotations

import errno
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image


def __getattr__(name: str) -> object:
    """``REGISTRY``: the built-in plugins' registry, loaded on first use (after conftest has
    switched autoloading off), handed to whatever a test builds."""
    if name == "REGISTRY":
        import plfw

        return plfw.load_registry()
    raise AttributeError(name)


def make_images(folder: Path, count: int = 4, size: tuple[int, int] = (48, 40),
                seed: int = 0) -> Path:
    """Smooth random colour images with some texture (so SR has something to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        freq = rng.uniform(0.05, 0.3, size=3)
        phase = rng.uniform(0, 6.28, size=3)
        img = np.stack([np.sin(freq[c] * xx + phase[c]) * np.cos(freq[c] * 0.7 * yy)
                        for c in range(3)], -1)
        img = (img * 0.4 + 0.5 + rng.normal(0, 0.03, img.shape)).clip(0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def tiny_config(tmp: Path, gan: bool = True, **top: object) -> Path:
    """A two-phase config small enough to train a few steps in about a second."""
    train = make_images(tmp / "train", 4)
    val = make_images(tmp / "val", 2, (32, 32), seed=1)
    cfg: dict = {
        "scale": 4,
        "seed": 3,
        "generator": {"name": "srresnet", "blocks": 1, "channels": 8},
        "data": {"train": {"name": "hr_folder", "root": str(train), "crop": 16},
                 "val": {"name": "hr_folder", "root": str(val)}, "batch_size": 2},
        "phases": {"srresnet": {"steps": 3, "lr": 1e-3}},
        "train": {"device": "cpu", "precision": "fp32", "log_every": 1, "val_every": 100,
                  "checkpoint_every": 1, "keep_last": 2, "deterministic": True},
        "run_dir": str(tmp / "run"),
    }
    if gan:
        cfg["phases"]["srgan"] = {
            "steps": 3, "lr": 1e-4, "discriminator": {"name": "srgan", "channels": 8},
            "losses": {
                "content": {"name": "perceptual", "network": {"name": "vgg19", "weights": "none"},
                            "layers": {"relu2_2": 1.0}, "feature_scale": 0.0784},
                "adversarial": {"name": "adversarial", "weight": 1e-3}}}
    cfg.update(top)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def fill_disk(disk: Path) -> Path:
    """Fill the filesystem of ``disk`` to its last byte; delete the returned file to free it."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: marks of a test that drives headless Chromium (the ``browser`` fixture in conftest.py)
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver"),
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None,
                       reason="needs the selenium package"),
]


def browser_test(test):  # noqa: ANN001, ANN201 - a decorator over any test function
    """Apply :data:`BROWSER_MARKS` to one test (the others of its module need no browser)."""
    for mark in BROWSER_MARKS:
        test = mark(test)
    return test
