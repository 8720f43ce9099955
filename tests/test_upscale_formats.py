"""plfw upscale on images as users have them: alpha, gray, 16-bit PNGs, WebP/JPEG output,
JSON records and output names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import png  # pypng: writes the 16-bit test inputs independently of plfw
import pytest
import torch
from helpers import REGISTRY
from PIL import Image

from plfw.cli import main
from plfw.device.runtime import make_runtime
from plfw.imaging.imresize import imresize
from plfw.inference.generators import batch_runner, load_generator
from plfw.inference.tiling import upscale_tiled

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "assets" / "photos" / "val" / "chelsea.png"
BASE = ["--model", "srresnet", "--quiet", "--device", "cpu", "--precision", "fp32"]


def _rgb(size: tuple[int, int] = (14, 10)) -> np.ndarray:
    w, h = size
    return np.asarray(Image.open(PHOTO).convert("RGB").crop((150, 60, 150 + w, 60 + h)))


def _alpha(size: tuple[int, int] = (14, 10)) -> np.ndarray:
    w, h = size
    a = np.tile(np.linspace(0, 255, w), (h, 1)).astype(np.uint8)
    a[: h // 2, : w // 2] = 0  # a fully transparent corner
    return a


def _model_on(planes: torch.Tensor) -> torch.Tensor:
    """What the bundled srresnet makes of (C, H, W) planes in [0, 1], whole image, fp32."""
    module, out_range = load_generator("srresnet", REGISTRY)
    run = batch_runner(module, out_range, make_runtime("cpu", "fp32", "false"))
    rgb = planes.expand(3, -1, -1) if planes.shape[0] == 1 else planes
    sr = upscale_tiled(run, rgb, 4, tile=0)
    return sr.mean(0, keepdim=True) if planes.shape[0] == 1 else sr


def _unit(arr: np.ndarray, top: float = 255.0) -> torch.Tensor:
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.astype(np.float32) / np.float32(top)).permute(2, 0, 1)


def test_rgba_keeps_its_alpha_upscaled_by_matlab_bicubic(tmp_path: Path) -> None:
    rgb, a = _rgb(), _alpha()
    Image.fromarray(np.dstack([rgb, a])).save(tmp_path / "logo.png")
    assert main(["upscale", str(tmp_path / "logo.png"), "--out", str(tmp_path / "o"),
                 *BASE]) == 0
    out = Image.open(tmp_path / "o" / "logo_x4.png")
    assert out.mode == "RGBA" and out.size == (56, 40)
    got = np.asarray(out).astype(np.float32) / 255
    want_alpha = imresize(_unit(a)[None], scale=4)[0, 0].clamp(0, 1).numpy()
    assert np.abs(got[..., 3] - want_alpha).max() <= 0.5 / 255 + 1e-6
    want_rgb = _model_on(_unit(rgb)).permute(1, 2, 0).numpy()
    assert np.abs(got[..., :3] - want_rgb).max() <= 1 / 255 + 1e-6


def test_alpha_drop_and_alpha_model(tmp_path: Path) -> None:
    rgb, a = _rgb(), _alpha()
    Image.fromarray(np.dstack([rgb, a])).save(tmp_path / "logo.png")
    assert main(["upscale", str(tmp_path / "logo.png"), "--out", str(tmp_path / "drop"),
                 "--alpha", "drop", *BASE]) == 0
    dropped = Image.open(tmp_path / "drop" / "logo_x4.png")
    assert dropped.mode == "RGB"
    colour, alpha = _unit(rgb), _unit(a)
    want = _model_on(colour * alpha + (1 - alpha)).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(dropped) / 255 - want).max() <= 1 / 255 + 1e-6
    assert main(["upscale", str(tmp_path / "logo.png"), "--out", str(tmp_path / "model"),
                 "--alpha", "model", *BASE]) == 0
    by_model = np.asarray(Image.open(tmp_path / "model" / "logo_x4.png")) / 255
    assert np.abs(by_model[..., 3] - _model_on(alpha)[0].numpy()).max() <= 1 / 255 + 1e-6


def test_la_stays_gray_with_alpha(tmp_path: Path) -> None:
    gray = np.asarray(Image.fromarray(_rgb()).convert("L"))
    Image.fromarray(np.dstack([gray, _alpha()]), mode=None).save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    assert main(["upscale", str(tmp_path / "la.png"), "--out", str(tmp_path / "o"),
                 *BASE]) == 0
    out = Image.open(tmp_path / "o" / "la_x4.png")
    assert out.mode == "LA" and out.size == (56, 40)


def test_grey_photo_stored_as_rgb_comes_out_grey(tmp_path: Path) -> None:
    """A grey photo saved as RGB (equal channels) gets the model's channel mean in each channel,
    as a gray file does: the model, trained on colour, would otherwise add colour speckle."""
    gray = np.asarray(Image.fromarray(_rgb()).convert("L"))
    Image.fromarray(np.dstack([gray] * 3)).save(tmp_path / "g.png")
    assert main(["upscale", str(tmp_path / "g.png"), "--out", str(tmp_path / "o"), *BASE]) == 0
    out = Image.open(tmp_path / "o" / "g_x4.png")
    assert out.mode == "RGB" and out.size == (56, 40)
    got = np.asarray(out).astype(np.float32) / 255
    assert (got == got[..., :1]).all()
    want = _model_on(_unit(gray))[0].numpy()
    assert np.abs(got[..., 0] - want).max() <= 1 / 255 + 1e-6


def _read16(path: Path) -> tuple[np.ndarray, dict]:
    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, -1), info


@pytest.mark.parametrize("planes", [1, 3, 4])
def test_16_bit_png_in_16_bit_png_out(tmp_path: Path, planes: int) -> None:
    rng = np.random.default_rng(planes)
    base = _rgb().astype(np.float64) * 257
    if planes == 1:
        base = base.mean(-1, keepdims=True)
    arr = np.clip(base + rng.integers(-200, 200, base.shape), 0, 65535).astype(np.uint16)
    if planes == 4:
        arr = np.dstack([arr, (_alpha().astype(np.uint16) * 257)])
    h, w = arr.shape[:2]
    writer = png.Writer(w, h, greyscale=planes == 1, alpha=planes == 4, bitdepth=16)
    with open(tmp_path / "deep.png", "wb") as f:
        writer.write(f, arr.reshape(h, -1))
    assert main(["upscale", str(tmp_path / "deep.png"), "--out", str(tmp_path / "o"),
                 "--quiet", "--device", "cpu", "--model", "srresnet"]) == 0  # precision auto
    out, info = _read16(tmp_path / "o" / "deep_x4.png")
    assert info["bitdepth"] == 16 and out.shape == (4 * h, 4 * w, planes)
    colour = _unit(arr[..., :3] if planes == 4 else arr, 65535.0)
    want = _model_on(colour).permute(1, 2, 0).numpy() * 65535
    got = out[..., :3] if planes == 4 else out
    assert np.abs(got.astype(np.float64) - want).max() <= 2  # fp32 all the way, 16-bit levels
    assert (got % 257 != 0).mean() > 0.9  # not 8-bit levels scaled up


def test_webp_jpg_quality_suffix_and_json_records(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, _alpha()])).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_text("not an image")
    inputs = [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    code = main(["upscale", *inputs, "--out", str(tmp_path / "jpg"), "--out-format", "jpg",
                 "--quality", "80", "--suffix", "", "--json", *BASE])
    assert code == 1  # c.png failed, the others were written
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["in"]).name for r in records] == ["a.png", "b.png", "c.png"]
    for r in records[:2]:
        assert r["error"] is None and r["size"] == [56, 40] and r["seconds"] >= 0
        assert Path(r["out"]).name == Path(r["in"]).stem + ".jpg"
        assert Image.open(r["out"]).format == "JPEG"
    assert records[2]["out"] is None and "c.png" in records[2]["error"]
    assert set(records[0]) == {"in", "out", "size", "seconds", "error", "skipped"}
    assert main(["upscale", inputs[1], "--out", str(tmp_path / "webp"), "--out-format", "webp",
                 "--suffix", "_sr", *BASE]) == 0
    webp = Image.open(tmp_path / "webp" / "b_sr.webp")
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    assert not list((tmp_path / "webp").glob(".*"))  # no temporary files left behind
