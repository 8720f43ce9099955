"""plfw.studies.duplicates: crops, shifts and gray copies are found; different photos are not;
on the real benchmarks Set5 head = Set14 face is the only duplicate."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plfw.imaging.images import load_gray_or_rgb, load_image
from plfw.studies.duplicates import MAX_DIFFERENCE, Duplicate, find_duplicates

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


def _photo(name: str) -> torch.Tensor:
    return load_image(next(PHOTOS.rglob(name)))


def _gray_like_pillow(rgb: torch.Tensor) -> torch.Tensor:
    """The gray file one would get from Pillow's convert('L'), back as a 1xHxW tensor."""
    arr = (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    gray = np.asarray(Image.fromarray(arr).convert("L"), dtype=np.float32) / 255
    return torch.from_numpy(gray)[None]


def test_a_crop_with_a_border_removed_is_found_with_its_offset() -> None:
    full = _photo("astronaut.png")  # 512 x 512
    crop = full[:, 37:490, 9:470]  # 37 / 22 rows and 9 / 42 columns off: up to 8 % per side
    found = find_duplicates({"a/full": full, "b/crop": crop})
    assert len(found) == 1
    dup = found[0]
    assert (dup.first, dup.second, dup.offset) == ("a/full", "b/crop", (37, 9))
    assert dup.overlap == tuple(crop.shape[1:]) and dup.difference == 0.0


def test_a_shifted_window_and_a_gray_copy_are_found() -> None:
    full = _photo("coffee.png")  # 600 x 400 (w x h)
    left, right = full[:, :390, :585], full[:, 6:, 11:]  # same size, shifted by (6, 11)
    found = find_duplicates({"left": left, "right": right})
    assert [(d.first, d.second, d.offset) for d in found] == [("left", "right", (6, 11))]
    gray = _gray_like_pillow(full[:, 5:380, 4:590])
    (dup,) = find_duplicates({"rgb": full, "gray": gray})
    assert dup.offset == (5, 4) and dup.difference < 0.5 / 255


def test_different_photos_are_not_duplicates() -> None:
    images = {name: _photo(f"{name}.png") for name in
              ("astronaut", "hubble_deep_field", "retina", "coffee", "rocket", "camera")}
    images["astronaut_brighter"] = (images["astronaut"] + 0.05).clamp(0, 1)
    found = find_duplicates(images)
    # the only pair is the brightened copy, and only with a looser threshold
    assert found == []
    loose = find_duplicates(images, max_difference=0.06)
    assert [(d.first, d.second) for d in loose] == [("astronaut", "astronaut_brighter")]


def test_refuses_a_tensor_that_is_not_chw() -> None:
    with pytest.raises(ValueError, match="bad: expected a CHW tensor"):
        find_duplicates({"bad": torch.zeros(2, 8, 8), "ok": torch.zeros(1, 8, 8)})


def test_real_benchmarks_have_head_equal_to_face_and_nothing_else(shared_data: Path) -> None:
    folders = {"Set5": shared_data / "benchmarks" / "Set5" / "HR",
               "Set14": shared_data / "benchmarks" / "Set14" / "HR",
               "General100": shared_data / "train" / "General100"}
    images: dict[str, torch.Tensor] = {}
    for name, folder in folders.items():
        if not folder.is_dir():
            pytest.skip(f"{folder} not found")
        for path in sorted(folder.glob("*.png")):
            images[f"{name}/{path.stem}"] = load_gray_or_rgb(path)
    assert len(images) >= 19
    start = time.perf_counter()
    found = find_duplicates(images)
    seconds = time.perf_counter() - start
    print(f"{len(images)} images: {found} in {seconds:.2f} s")
    assert found == [Duplicate("Set5/head", "Set14/face", (2, 2), 0.0, (276, 276))], found
    assert seconds < 10, f"duplicate search took {seconds:.1f} s for {len(images)} images"
    head, face = images["Set5/head"], images["Set14/face"]
    assert torch.equal(head[:, 2:278, 2:278], face)
    assert MAX_DIFFERENCE == pytest.approx(2 / 255)
