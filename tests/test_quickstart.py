"""The README's main job: both phases on the shipped photos, SRResNet beating bicubic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_trains_both_phases_and_beats_bicubic(tmp_path: Path) -> None:
    run = tmp_path / "quickstart"
    out = subprocess.run([sys.executable, "-m", "plfw", "train", "configs/quickstart.yaml",
                          f"run_dir={run}", "--quiet"], cwd=REPO, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"bicubic", "srresnet", "srgan"}
    assert summary["srresnet"]["psnr_y"] > summary["bicubic"]["psnr_y"]
    assert (run / "summary.png").is_file() and "| srgan |" in out.stdout


def test_quickstart_config_is_valid_and_uses_the_shipped_photos() -> None:
    from plfw.core.config import load_config

    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    assert list(cfg.phases) == ["srresnet", "srgan"]
    assert cfg.data.train["root"] == "assets/photos/train"
    assert cfg.phases["srgan"].losses["content"]["network"] == {"name": "vgg19",
                                                                 "weights": "caffe"}
    assert sum(p.minutes for p in cfg.phases.values()) < 10
