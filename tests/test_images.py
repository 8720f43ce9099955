"""plfw.imaging.images: every bad or unusual file becomes a clear ImageError; good ones load
right."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plfw.core.errors import UserError
from plfw.imaging.images import (
    IMAGE_SUFFIXES,
    ImageError,
    list_images,
    load_gray_or_rgb,
    load_image,
    load_image_uint8,
    probe_image,
    save_image,
    show_path,
)


def noise(h: int, w: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def fake_png(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def truncated(tmp_path: Path, suffix: str) -> Path:
    buf = io.BytesIO()
    noise(64, 64).save(buf, format="PNG" if suffix == ".png" else "JPEG", quality=90)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def expect_error(path: Path | bytes, *words: str, loader=load_image, **kw) -> ImageError:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning may escape either
        with pytest.raises(ImageError) as info:
            loader(path, **kw)
    msg = str(info.value)
    assert show_path(path) in msg
    for word in words:
        assert word in msg
    assert "\n" not in msg
    return info.value


# --- good files -------------------------------------------------------------------------------


def test_rgb_png_loads_exactly(tmp_path: Path) -> None:
    im = noise(13, 17)
    im.save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.dtype == torch.float32 and x.shape == (3, 13, 17)
    expected = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
    assert torch.equal(x, expected)
    assert torch.equal(load_gray_or_rgb(str(tmp_path / "a.png")), x)
    assert np.array_equal(load_image_uint8(tmp_path / "a.png").permute(1, 2, 0).numpy(),
                          np.array(im))


def test_grayscale_keeps_one_channel_only_when_asked(tmp_path: Path) -> None:
    noise(8, 9, "L").save(tmp_path / "g.png")
    gray, rgb = load_gray_or_rgb(tmp_path / "g.png"), load_image(tmp_path / "g.png")
    assert gray.shape == (1, 8, 9) and rgb.shape == (3, 8, 9)
    assert torch.equal(rgb, gray.expand(3, -1, -1))


def test_sixteen_bit_png_keeps_precision(tmp_path: Path) -> None:
    arr = np.arange(0, 65536, 257 * 3, dtype=np.uint16)[:80].reshape(8, 10)
    arr[0, 0], arr[0, 1] = 1, 65535
    Image.fromarray(arr).save(tmp_path / "deep.png")
    x = load_gray_or_rgb(tmp_path / "deep.png")
    assert x.shape == (1, 8, 10)
    assert torch.allclose(x[0].double(), torch.from_numpy(arr / 65535.0), atol=1e-7)
    assert x[0, 0, 0] == pytest.approx(1 / 65535) and x[0, 0, 1] == 1.0
    assert load_image(tmp_path / "deep.png").shape == (3, 8, 10)
    levels = load_image_uint8(tmp_path / "deep.png")
    assert levels.dtype == torch.uint8 and levels.shape == (3, 8, 10)
    assert torch.equal(levels[0], torch.from_numpy(np.rint(arr / 257.0).astype(np.uint8)))


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red 200, alpha: 0 | 255 | 128
    rgba[:, 1, 3], rgba[:, 2, 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png")
    assert torch.allclose(x[:, 0, 0], torch.ones(3))  # fully transparent -> white
    assert torch.allclose(x[:, 0, 1], torch.tensor([200 / 255, 0, 0]))
    a = 128 / 255
    assert torch.allclose(x[:, 0, 2], torch.tensor([200 / 255 * a + 1 - a, 1 - a, 1 - a]))
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    la.save(tmp_path / "la.png")
    g = load_gray_or_rgb(tmp_path / "la.png")
    assert g.shape == (1, 2, 3) and g[0, 0, 0] == 1.0 and g[0, 0, 1] == pytest.approx(200 / 255)


def test_palette_images(tmp_path: Path) -> None:
    im = noise(6, 7).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    im.save(tmp_path / "p.png")
    expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(load_image(tmp_path / "p.png"), expected)
    im.info["transparency"] = int(np.asarray(im)[0, 0])
    im.save(tmp_path / "pt.png", transparency=im.info["transparency"])
    assert torch.equal(load_image(tmp_path / "pt.png")[:, 0, 0], torch.ones(3))


def test_one_bit_and_cmyk_jpeg(tmp_path: Path) -> None:
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    bits.save(tmp_path / "bits.png")
    assert load_gray_or_rgb(tmp_path / "bits.png").flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    x = load_image(tmp_path / "cmyk.jpg")
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03)  # red


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((10, 20, 3), dtype=np.uint8)  # 20 wide, 10 high; left quarter red
    arr[:, :5, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "rot.jpg")
    assert x.shape == (3, 20, 10)  # now 10 wide, 20 high
    assert x[0, :5].mean() > 0.9 and x[0, 5:].mean() < 0.1  # the red band is on top
    assert probe_image(tmp_path / "rot.jpg") == (20, 10)  # the stored size, before EXIF


def test_non_utf8_file_name(tmp_path: Path) -> None:
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    try:
        with open(name, "wb") as f:
            noise(5, 6).save(f, format="PNG")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    assert load_image(name).shape == (3, 5, 6)
    (found,) = list_images(tmp_path)
    assert load_image(found).shape == (3, 5, 6)
    with open(name, "wb") as f:
        f.write(b"not an image")
    err = expect_error(name, "caf\\xe9.png")
    str(err).encode("utf-8")  # printable: no lone surrogates
    assert err.path == found


# --- bad files --------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    expect_error(tmp_path / "empty.png", "empty")
    expect_error(tmp_path / "empty.png", "empty", loader=probe_image)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files(tmp_path: Path, suffix: str) -> None:
    path = truncated(tmp_path, suffix)
    expect_error(path, "truncated")
    if suffix == ".png":  # the PNG check sums catch it without decoding
        expect_error(path, "truncated", loader=probe_image)


def test_text_file_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello, I am text\n")
    expect_error(tmp_path / "notes.png", "not an image")
    (tmp_path / "head.png").write_bytes(fake_png(8, 8)[:20])  # cut inside the header
    expect_error(tmp_path / "head.png", "corrupt or truncated", "header")
    (tmp_path / "sig.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)  # PNG, then junk
    expect_error(tmp_path / "sig.png", "corrupt or truncated PNG header")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.png", "no such file")
    (tmp_path / "dir.png").mkdir()
    expect_error(tmp_path / "dir.png", "directory")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    noise(4, 4).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything; the directory case covers it
            pytest.skip("running as a user that can read mode-000 files (root)")
        expect_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(fake_png(100_000, 100_000))
    assert path.stat().st_size < 200
    expect_error(path, "too large")
    expect_error(path, "too large", loader=probe_image)


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    noise(20, 20).save(tmp_path / "a.png")
    expect_error(tmp_path / "a.png", "400 pixels", "limit of 399", max_pixels=399)
    assert load_image(tmp_path / "a.png", max_pixels=400).shape == (3, 20, 20)
    # Above Pillow's warning threshold (89 Mpx) but under plfw's: the warning must not leak.
    path = tmp_path / "big.png"
    path.write_bytes(fake_png(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe_image(path) == (10_000, 10_000)


# --- saving and listing -----------------------------------------------------------------------


def test_save_round_trip_and_overwrite(tmp_path: Path) -> None:
    x = torch.rand(3, 9, 11)
    out = tmp_path / "sub" / "x.png"
    save_image(x, out)
    assert torch.equal(load_image(out), (x * 255).round() / 255)
    with pytest.raises(UserError, match=r"x\.png already exists.*--overwrite"):
        save_image(torch.zeros(3, 9, 11), out)
    assert load_image(out).max() > 0  # untouched
    save_image(torch.zeros(1, 9, 11), out, overwrite=True)
    assert load_gray_or_rgb(out).shape == (1, 9, 11) and load_image(out).max() == 0
    smooth = torch.linspace(0, 1, 11).expand(3, 9, 11)
    save_image(smooth, tmp_path / "x.JPG")
    assert (load_image(tmp_path / "x.JPG") - smooth).abs().max() < 0.05
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub", "x.JPG", "x.png"]  # no temps


def test_save_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"y\.gif.*suffix"):
        save_image(torch.zeros(3, 2, 2), tmp_path / "y.gif")


def test_list_images(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", "c.JpEg", "d.bmp", "e.tif", "f.tiff", "g.webp"]:
        noise(3, 3).save(tmp_path / name)
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "._a.png").write_bytes(b"\0\0")  # macOS resource fork
    (tmp_path / "sub").mkdir()
    noise(3, 3).save(tmp_path / "sub" / "z.png")
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.JpEg", "d.bmp", "e.tif", "f.tiff", "g.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=True)][-1] == "z.png"
    assert {p.suffix.lower() for p in list_images(tmp_path)} == set(IMAGE_SUFFIXES)


def test_list_images_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere.*does not exist"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(UserError, match="no images.*docs"):
        list_images(tmp_path / "docs")
