"""Built-in datasets: shapes, LR/HR alignment, bad files skipped or reported, seeds, workers."""

from __future__ import annotations

import csv
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_images import fake_png
from torch.utils.data import DataLoader

import plfw
from plfw.core.errors import UserError
from plfw.imaging.images import ImageError
from plfw.imaging.imresize import bicubic_downscale_uint8


def write(path: Path, h: int, w: int, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    im = im.convert(mode) if mode != "RGB" else im
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90) if path.suffix == ".jpg" else im.save(path)
    return path


def hr_folder(root: Path, **params):
    return plfw.build("dataset", {"name": "hr_folder", "root": str(root), **params})


def paired(hr: Path, lr: Path, **params):
    return plfw.build("dataset", {"name": "paired_folders", "hr_root": str(hr),
                                  "lr_root": str(lr), **params})


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i, (h, w) in enumerate([(40, 48), (64, 36), (33, 50)]):
        write(tmp_path / "hr" / f"im{i}.png", h, w, seed=i)
    return tmp_path / "hr"


def test_registered() -> None:
    assert {"hr_folder", "paired_folders"} <= set(plfw.list_components("dataset"))
    with pytest.raises(UserError, match="needs root"):
        plfw.build("dataset", "hr_folder")


def test_items_shapes_ranges_and_alignment(folder: Path) -> None:
    ds = hr_folder(folder, crop=32, scale=4)
    assert len(ds) == 3
    torch.manual_seed(0)
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
        assert lr.dtype == hr.dtype == torch.float32
        assert 0 <= hr.min() and hr.max() <= 1 and 0 <= lr.min() and lr.max() <= 1
        # LR is exactly MATLAB bicubic of the (augmented) HR crop.
        assert torch.equal(to_uint8(lr), bicubic_downscale_uint8(to_uint8(hr), 4))
        assert torch.equal(to_uint8(hr).float() / 255, hr)


def test_hr_crop_is_a_real_patch(folder: Path) -> None:
    full = torch.from_numpy(np.array(Image.open(folder / "im0.png"))).permute(2, 0, 1)
    ds = hr_folder(folder, crop=16, augment=False, max_images=1)
    _, hr = ds[0]
    hits = [(y, x) for y in range(40 - 15) for x in range(48 - 15)
            if torch.equal(full[:, y:y + 16, x:x + 16], to_uint8(hr))]
    assert len(hits) == 1


def test_whole_images_are_mod_cropped(folder: Path) -> None:
    ds = hr_folder(folder, crop=0, augment=False)
    shapes = [tuple(ds[i][1].shape) for i in range(3)]
    assert shapes == [(3, 40, 48), (3, 64, 36), (3, 32, 48)]
    assert tuple(ds[2][0].shape) == (3, 8, 12)
    assert tuple(hr_folder(folder, crop=None, augment=False)[2][1].shape) == (3, 32, 48)


def test_image_smaller_than_crop_is_mirror_padded(tmp_path: Path) -> None:
    write(tmp_path / "small.png", 20, 30)
    ds = hr_folder(tmp_path, crop=96, augment=False)
    lr, hr = ds[0]
    assert hr.shape == (3, 96, 96) and lr.shape == (3, 24, 24)
    src = to_uint8(torch.from_numpy(np.array(Image.open(tmp_path / "small.png"))).permute(
        2, 0, 1).float() / 255)
    # (96 - 20) / 2 = 38 mirrored rows on top, 33 columns on the left, then the image itself.
    assert torch.equal(to_uint8(hr)[:, 38:58, 33:63], src)
    assert torch.equal(to_uint8(hr)[:, 37, 33:63], src[:, 0])  # symmetric: the edge row repeats


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    write(tmp_path / "g.png", 16, 16, mode="L")
    lr, hr = hr_folder(tmp_path, crop=8)[0]
    assert hr.shape == (3, 8, 8) and lr.shape == (3, 2, 2)
    assert torch.equal(hr[0], hr[1]) and torch.equal(hr[1], hr[2])


def test_repeat_max_images_and_pickle(folder: Path) -> None:
    assert len(hr_folder(folder, repeat=5)) == 15
    ds = hr_folder(folder, max_images=2, repeat=2, crop=16)
    assert len(ds) == 4
    clone = pickle.loads(pickle.dumps(ds))
    torch.manual_seed(3)
    a = ds[3]
    torch.manual_seed(3)
    assert all(torch.equal(x, y) for x, y in zip(a, clone[3], strict=True))
    with pytest.raises(IndexError):
        ds[4]


def test_same_seed_same_items(folder: Path) -> None:
    ds = hr_folder(folder, crop=16)

    def draw(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [ds[i % 3][1] for i in range(6)]

    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_two_workers(tmp_path: Path) -> None:
    write(tmp_path / "one.png", 64, 64)
    ds = hr_folder(tmp_path, crop=16, repeat=8)

    def run() -> list[torch.Tensor]:
        torch.manual_seed(7)
        loader = DataLoader(ds, batch_size=2, num_workers=2)
        return [hr for _, hr in loader]

    first, second = run(), run()
    assert len(first) == 4 and first[0].shape == (2, 3, 16, 16)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    # Batches 0 and 1 come from different workers: their crops must differ.
    assert not torch.equal(first[0], first[1])


# --- bad input --------------------------------------------------------------------------------


def add_bad_files(root: Path) -> list[str]:
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buf, format="PNG")
    (root / "cut.png").write_bytes(buf.getvalue()[:5000])
    (root / "dir.png").mkdir()  # not a file: not listed at all
    return ["cut.png", "empty.png", "text.png"]


def test_bad_files_are_skipped_with_one_warning(folder: Path) -> None:
    names = add_bad_files(folder)
    for cache in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = hr_folder(folder, crop=16, cache=cache)
        assert len(ds) == 3
        assert len(caught) == 1
        msg = str(caught[0].message)
        assert "skipped 3 of 6 files" in msg and all(n in msg for n in names)


def test_bad_file_raises_when_asked(folder: Path) -> None:
    add_bad_files(folder)
    with pytest.raises(ImageError, match=r"cut\.png.*truncated"):
        hr_folder(folder, on_error="raise")


def test_only_bad_files(tmp_path: Path) -> None:
    add_bad_files(tmp_path)
    with pytest.raises(UserError, match="no usable images.*skipped 3 of 3"):
        hr_folder(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="no images"):
        hr_folder(tmp_path / "sub")


def test_huge_header_and_tiny_image_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "ok.png", 16, 16)
    (tmp_path / "bomb.png").write_bytes(fake_png(100_000, 100_000))
    write(tmp_path / "dot.png", 2, 9)
    with pytest.warns(UserWarning, match=r"skipped 2 of 3.*bomb\.png: too large.*dot\.png"):
        assert len(hr_folder(tmp_path, crop=8)) == 1


def test_truncated_jpeg_found_at_decode_time(tmp_path: Path) -> None:
    write(tmp_path / "a.png", 16, 16)
    write(tmp_path / "b.jpg", 64, 64)
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"b\.jpg"):  # decoding up front finds it
        assert len(hr_folder(tmp_path, crop=8)) == 1
    ds = hr_folder(tmp_path, crop=8, cache=False)  # header checks cannot see it
    assert len(ds) == 2
    with pytest.warns(UserWarning, match=r"skipping.*b\.jpg"):
        assert ds[1][1].shape == (3, 8, 8)  # another image stands in
    strict = hr_folder(tmp_path, crop=8, cache=False, on_error="raise")
    with pytest.raises(ImageError, match=r"b\.jpg"):
        strict[1]


def test_grey_turns_that_share_of_crops_grey(folder: Path) -> None:
    """``grey: p``: about p of the crops have three equal channels (BT.601 luma), LR made from
    the grey HR; the rest keep their colours; 0 (the default) draws nothing extra."""
    torch.manual_seed(0)
    ds = hr_folder(folder, crop=16, grey=0.5, repeat=100)
    grey = 0
    for i in range(len(ds)):
        lr, hr = ds[i]
        if torch.equal(hr[0], hr[1]) and torch.equal(hr[1], hr[2]):
            grey += 1
            assert torch.equal(lr[0], lr[1]) and torch.equal(lr[1], lr[2])
    assert 0.4 < grey / len(ds) < 0.6  # the noise images are never grey by chance
    torch.manual_seed(0)
    plain = hr_folder(folder, crop=16)
    first = [plain[i] for i in range(3)]
    torch.manual_seed(0)
    zero = hr_folder(folder, crop=16, grey=0.0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, [zero[i] for i in range(3)],
                                                       strict=True))
    luma = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    always = hr_folder(folder, crop=16, grey=1.0, augment=False)
    colour = hr_folder(folder, crop=16, augment=False)
    torch.manual_seed(1)
    _, g = always[0]
    torch.manual_seed(1)
    _, c = colour[0]  # the same crop: the grey draw comes after it
    assert (g[0] * 255 - (c * 255 * luma).sum(0)).abs().max() <= 0.5 + 1e-4  # rounded luma


def test_bad_params(folder: Path) -> None:
    with pytest.raises(UserError, match="on_error.*did you mean: skip"):
        hr_folder(folder, on_error="skp")
    with pytest.raises(UserError, match="crop must be"):
        hr_folder(folder, crop=30)
    with pytest.raises(UserError, match="unknown parameter 'crops'"):
        hr_folder(folder, crops=32)
    with pytest.raises(UserError, match="grey must be"):
        hr_folder(folder, grey=1.5)


# --- paired folders ---------------------------------------------------------------------------


def make_pairs(root: Path, sizes: list[tuple[int, int]], scale: int = 4) -> None:
    """LR noise and HR = LR with each pixel repeated scale x scale: exact alignment is checkable."""
    (root / "HR").mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        write(root / "LR" / f"p{i}.png", h, w, seed=i)
        lr = Image.open(root / "LR" / f"p{i}.png")
        lr.resize((w * scale, h * scale), Image.Resampling.NEAREST).save(root / "HR" / f"p{i}.png")


def test_paired_crops_are_aligned(tmp_path: Path) -> None:
    make_pairs(tmp_path, [(12, 10), (5, 7)])  # the second is smaller than the LR crop
    ds = paired(tmp_path / "HR", tmp_path / "LR", crop=32)
    torch.manual_seed(0)
    for i in range(8):
        lr, hr = ds[i % 2]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
        assert torch.equal(hr[:, ::4, ::4], lr)
        assert torch.equal(hr, lr.repeat_interleave(4, 1).repeat_interleave(4, 2))


def test_paired_whole_images(tmp_path: Path) -> None:
    make_pairs(tmp_path, [(12, 10)])
    lr, hr = paired(tmp_path / "HR", tmp_path / "LR", crop=0, augment=False)[0]
    assert lr.shape == (3, 12, 10) and hr.shape == (3, 48, 40)


def test_paired_mismatches(tmp_path: Path) -> None:
    make_pairs(tmp_path, [(12, 10), (6, 6)])
    write(tmp_path / "HR" / "p1.png", 25, 24)  # not 4x its LR
    write(tmp_path / "HR" / "lonely.png", 8, 8)
    with pytest.warns(UserWarning, match=r"skipped 2 of 3.*lonely\.png: no LR.*p1\.png: HR is "
                                         r"24x25 but its LR is 6x6"):
        assert len(paired(tmp_path / "HR", tmp_path / "LR")) == 1
    with pytest.raises(ImageError, match=r"lonely\.png"):
        paired(tmp_path / "HR", tmp_path / "LR", on_error="raise")
    (tmp_path / "HR" / "lonely.png").unlink()
    with pytest.raises(ImageError, match=r"p1\.png.*exactly 4x"):
        paired(tmp_path / "HR", tmp_path / "LR", on_error="raise", cache=False)


def test_paired_folders_match_div2k_style_lr_names(tmp_path: Path) -> None:
    """DIV2K names its LR images 0001x4.png; others 0001_x4, 0001_LR, baby_LR_x4: each pairs
    with its HR (they were all 'no LR image named 0001.*'), an exact stem still wins, and
    two LR names for one HR image are reported, not guessed."""
    names = {"0001": "0001x4", "0002": "0002_x4", "0003": "0003_LR", "baby": "baby_LR_x4",
             "img_001": "img_001_SRF_4_LR", "0004": "0004"}
    (tmp_path / "HR").mkdir()
    for i, (hr_stem, lr_stem) in enumerate(names.items()):
        write(tmp_path / "LR" / f"{lr_stem}.png", 6, 5, seed=i)
        Image.open(tmp_path / "LR" / f"{lr_stem}.png").resize(
            (20, 24), Image.Resampling.NEAREST).save(tmp_path / "HR" / f"{hr_stem}.png")
    write(tmp_path / "LR" / "0004x4.png", 6, 5, seed=99)  # the exact 0004.png wins
    ds = paired(tmp_path / "HR", tmp_path / "LR", crop=0, augment=False)
    assert len(ds) == len(names)
    for i, (lr, hr) in enumerate(ds):
        assert torch.equal(hr[:, ::4, ::4], lr), ds.names[i]
    assert sorted(ds.names) == sorted(names)
    write(tmp_path / "LR" / "0001_LR.png", 6, 5)  # a second LR name for 0001
    with pytest.warns(UserWarning, match=r"skipped 1 of 6.*0001\.png: several LR images match "
                                         r"it \(0001_LR\.png, 0001x4\.png\)"):
        assert len(paired(tmp_path / "HR", tmp_path / "LR", crop=0)) == 5


# --- real data --------------------------------------------------------------------------------


def test_t91_with_96_crops(shared_data: Path) -> None:
    root = shared_data / "train" / "T91"
    with open(shared_data / "train" / "manifest_T91.csv") as f:
        small = {r["name"] for r in csv.DictReader(f) if min(int(r["width"]),
                                                             int(r["height"])) < 96}
    assert small  # T91 has images under 96 px on a side
    ds = hr_folder(root, crop=96, cache=False)
    assert len(ds) == 91
    names = [p.name for (p,) in ds.entries]
    torch.manual_seed(0)
    for name in sorted(small)[:4] + names[:2]:
        lr, hr = ds[names.index(name)]
        assert lr.shape == (3, 24, 24) and hr.shape == (3, 96, 96)
