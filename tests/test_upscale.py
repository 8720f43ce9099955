"""plfw upscale with the bundled models: tiles without seams, no overwrites, bad files skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REGISTRY
from PIL import Image

from plfw.cli import main
from plfw.imaging.images import load_image
from plfw.inference.generators import bundled_models, load_generator, to_unit
from plfw.inference.tiling import upscale_tiled

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "assets" / "photos" / "val" / "chelsea.png"


def _crop(tmp: Path, size: int = 40) -> Path:
    path = tmp / "cat.png"
    Image.open(PHOTO).convert("RGB").crop((150, 60, 150 + size, 60 + size)).save(path)
    return path


def test_bundled_models_are_installed() -> None:
    assert set(bundled_models()) == {"srresnet", "srgan"}
    module, out_range = load_generator("srgan", REGISTRY)
    assert module.scale == 4 and out_range == (-1.0, 1.0)


def test_tiled_output_of_the_trained_model_has_no_seams(tmp_path: Path) -> None:
    module, out_range = load_generator("srresnet", REGISTRY)
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
    module, _ = load_generator("srresnet", REGISTRY)
    path = tmp_path / "plain.pt"
    torch.save(module.state_dict(), path)
    rebuilt, out_range = load_generator(path, REGISTRY)
    assert out_range == (-1.0, 1.0)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(rebuilt(x), module(x))


# ------------------------------------------------- options and outputs that lose data (issue 36)


def _upscale(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["upscale", *argv, "--model", "srresnet", "--quiet", "--device", "cpu"])
    return code, capsys.readouterr().err


def _tiny_png(path: Path, colour: tuple[int, int, int] = (10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), colour).save(path)
    return path


@pytest.mark.parametrize("option", [["--tile", "-5"], ["--overlap", "-1"]])
def test_negative_tile_or_overlap_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    code, err = _upscale(capsys, str(_tiny_png(tmp_path / "a.png")), "--out",
                         str(tmp_path / "out"), *option)
    assert code == 2 and err.count("\n") == 1 and " ".join(option) in err, err


def test_two_inputs_with_one_output_name_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """a/x.png and b/x.png both became out/x_x4.png: with --overwrite one silently replaced
    the other; without it the second was reported as an existing output."""
    first, second = _tiny_png(tmp_path / "a" / "x.png"), _tiny_png(tmp_path / "b" / "x.png")
    out = tmp_path / "out"
    for extra in ([], ["--overwrite"]):
        code, err = _upscale(capsys, str(first.parent), str(second.parent), "--out", str(out),
                             *extra)
        assert code == 2 and err.count("\n") == 1, err
        assert "x_x4.png" in err and str(first) in err and str(second) in err
        assert not out.exists()


def test_an_output_is_never_one_of_the_inputs(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    original = _tiny_png(photos / "x.png").read_bytes()
    code, err = _upscale(capsys, str(photos), "--out", str(photos), "--suffix", "",
                         "--overwrite")
    assert code == 2 and err.count("\n") == 1 and "would replace the input" in err, err
    assert (photos / "x.png").read_bytes() == original and len(list(photos.iterdir())) == 1
    # a previous output in the input folder would be overwritten by its own source's output
    _tiny_png(photos / "x_x4.png", (0, 0, 0))
    code, err = _upscale(capsys, str(photos), "--out", str(photos), "--overwrite")
    assert code == 2 and "x_x4.png would replace the input" in err, err


def test_an_input_named_twice_is_upscaled_once(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    image = _tiny_png(tmp_path / "in" / "x.png")
    code, err = _upscale(capsys, str(image.parent), str(image), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x_x4.png"]


def test_a_read_only_out_folder_is_one_line_before_the_model_loads(
        tmp_path: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for out in (read_only_dir, read_only_dir / "new" / "folder"):
        code, err = _upscale(capsys, str(_tiny_png(tmp_path / "a.png")), "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and "not writable" in err, err


def test_a_rerun_skips_existing_outputs_and_exits_0(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Rerunning upscale without --overwrite (to finish an interrupted folder) counted every
    existing output as a failure (exit 1): now they are skipped, said in the summary, exit 0;
    only real failures make exit 1."""
    photos = tmp_path / "photos"
    first = _tiny_png(photos / "a.png")
    out = tmp_path / "out"
    code, err = _upscale(capsys, str(first), "--out", str(out))
    assert code == 0, err
    done = (out / "a_x4.png").read_bytes()
    _tiny_png(photos / "b.png", (200, 10, 10))
    code, err = _upscale(capsys, str(photos), "--out", str(out))
    assert code == 0, err
    assert (out / "a_x4.png").read_bytes() == done and (out / "b_x4.png").is_file()
    assert err.strip().splitlines()[-1] == (
        "plfw: 2 input(s): 1 written, 1 skipped (output exists; --overwrite replaces it)")
    assert "a.png" in err and "exists" in err
    (photos / "c.png").write_text("not an image")
    code, err = _upscale(capsys, str(photos), "--out", str(out))
    assert code == 1 and err.strip().splitlines()[-1] == (
        "plfw: 3 input(s): 0 written, 2 skipped (output exists; --overwrite replaces it), "
        "1 failed"), err
    main(["upscale", str(photos / "a.png"), "--out", str(out), "--model", "srresnet",
          "--quiet", "--device", "cpu", "--json"])
    record = json.loads(capsys.readouterr().out.strip())
    assert record["skipped"] == "output exists" and record["error"] is None
    assert record["out"] == str(out / "a_x4.png")
