"""plfw upscale with the bundled models: tiles without seams, no overwrites, bad files skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from plfw.generators import bundled_models, load_generator, to_unit
from plfw.images import load_image
from plfw.tiling import upscale_tiled

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "assets" / "photos" / "val" / "chelsea.png"


def _crop(tmp: Path, size: int = 40) -> Path:
    path = tmp / "cat.png"
    Image.open(PHOTO).convert("RGB").crop((150, 60, 150 + size, 60 + size)).save(path)
    return path


def test_bundled_models_are_installed() -> None:
    assert set(bundled_models()) == {"srresnet", "srgan"}
    module, out_range = load_generator("srgan")
    assert module.scale == 4 and out_range == (-1.0, 1.0)


def test_tiled_output_of_the_trained_model_has_no_seams(tmp_path: Path) -> None:
    module, out_range = load_generator("srresnet")
    lr = load_image(_crop(tmp_path, 48))

    def net(x: torch.Tensor) -> torch.Tensor:
        return to_unit(module(x), out_range)

    whole = upscale_tiled(net, lr, 4, tile=0)
    tiled = upscale_tiled(net, lr, 4, tile=20, overlap=32)
    assert (whole - tiled).abs().max() <= 1 / 255


def test_cli_upscale_skips_bad_files_and_never_overwrites(tmp_path: Path) -> None:
    good = _crop(tmp_path, 24)
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "plfw", "upscale", str(good), str(bad), "--out", str(out),
           "--model", "srresnet", "--quiet", "--device", "cpu"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 1  # one input failed, the other was written
    assert "broken.png" in first.stderr and "MP/s" in first.stdout
    result = out / "cat_x4.png"
    assert Image.open(result).size == (96, 96)
    stamp = result.stat().st_mtime_ns
    again = subprocess.run(cmd[:5] + cmd[6:], capture_output=True, text=True)
    assert "--overwrite" in again.stderr and result.stat().st_mtime_ns == stamp
    forced = subprocess.run(cmd[:5] + cmd[6:] + ["--overwrite"], capture_output=True, text=True)
    assert forced.returncode == 0 and result.stat().st_mtime_ns != stamp


def test_plain_state_dict_is_accepted(tmp_path: Path) -> None:
    module, _ = load_generator("srresnet")
    path = tmp_path / "plain.pt"
    torch.save(module.state_dict(), path)
    rebuilt, out_range = load_generator(path)
    assert out_range == (-1.0, 1.0)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(rebuilt(x), module(x))
