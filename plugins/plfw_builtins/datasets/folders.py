"""Built-in training datasets: ``hr_folder`` (LR made on the fly) and ``paired_folders``.

Both yield ``(lr, hr)`` float RGB tensors in [0, 1], CHW, with ``hr`` exactly ``scale`` times
``lr``. Grayscale files are expanded to RGB. Bad files are found when the dataset is built: with
``on_error: skip`` they are left out with one warning, with ``on_error: raise`` the first one stops
the run with an error naming it. With ``cache: true`` every image is decoded once at construction
(which also finds damage a header check misses, like a truncated JPEG) and kept as uint8; forked
DataLoader workers then share that memory instead of each decoding again. With ``cache: false``
only headers are checked up front, and a file that still fails later is skipped (or raised) then.

Randomness (crop position, flips) comes from torch's global generator, which the DataLoader seeds
per worker from ``torch.manual_seed``: crops differ across workers and repeat between runs.

Images smaller than the crop are mirror-padded (symmetric, edge pixel repeated) rather than
upscaled: upscaling would blur the HR target and teach the network that blur is detail, while a
mirrored border keeps real pixel statistics. T91 has 78-px sides, so 96-px crops need this.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING
from torch.utils.data import Dataset

import plfw
from plfw import (
    ImageError,
    PlfwWarning,
    UserError,
    bicubic_downscale_uint8,
    list_images,
    load_image_uint8,
    probe_image,
    show_path,
    stem_candidates,
    suggest,
)
from plfw_builtins.metrics.periodic import luma

ON_ERROR = ("skip", "raise")
_SHOWN_BAD = 5  # bad files named in the warning; the rest are counted


@dataclass
class HRFolderParams:
    """An HR image folder; LR is MATLAB bicubic of each (uint8) HR crop, made per item."""

    root: str = MISSING
    scale: int = 4
    crop: int | None = 96  # HR crop side; 0 or null: whole images, mod-cropped to scale
    augment: bool = True  # random flips and transposes (the 8 rotations/reflections)
    repeat: int = 1  # epoch length = images * repeat
    on_error: str = "skip"  # skip | raise
    cache: bool = True  # decode every image once, at construction, and keep it (uint8)
    max_images: int = 0  # use only the first N usable images (sorted by name); 0 = all
    recursive: bool = False
    more_roots: list[str] = field(default_factory=list)  # read like root, e.g. [T91, BSD200]
    # share of crops turned grey (BT.601 luma in all three channels) before the LR is made: a
    # colour-only training set otherwise leaves grey photos outside what a GAN has seen
    grey: float = 0.0


@dataclass
class PairedFoldersParams:
    """HR and LR folders paired by file stem: ``HR/0001.png`` with ``LR/0001.png`` (any
    image extension) or, when no LR file has the exact stem, one named with a scale tag or an
    LR word: ``0001x4`` (DIV2K), ``0001_x4``, ``0001_LR``, ``0001_LR_x4``
    (``plfw.evaluation.stems``)."""

    hr_root: str = MISSING
    lr_root: str = MISSING
    scale: int = 4
    crop: int | None = 96  # HR crop side; the LR crop is crop / scale at the matching place
    augment: bool = True
    repeat: int = 1
    on_error: str = "skip"
    cache: bool = True


def _check_common(name: str, scale: int, crop: int | None, repeat: int, on_error: str) -> None:
    if scale < 1:
        raise UserError(f"dataset '{name}': scale must be >= 1, got {scale}")
    if crop is not None and (crop < 0 or crop % scale):
        raise UserError(f"dataset '{name}': crop must be 0 or a positive multiple of scale "
                        f"({scale}), got {crop}")
    if repeat < 1:
        raise UserError(f"dataset '{name}': repeat must be >= 1, got {repeat}")
    if on_error not in ON_ERROR:
        raise UserError(f"dataset '{name}': on_error must be skip or raise, got "
                        f"'{on_error}'{suggest(on_error, ON_ERROR)}")


def _randint(n: int) -> int:
    """Uniform in [0, n) from torch's (per-worker seeded) global generator."""
    return int(torch.randint(n, ()).item()) if n > 1 else 0


def _pad(img: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Symmetric mirror padding; works for pads larger than the image (numpy repeats it)."""
    if not (top or bottom or left or right):
        return img
    arr = np.pad(img.numpy(), ((0, 0), (top, bottom), (left, right)), mode="symmetric")
    return torch.from_numpy(arr)


def grey_uint8(img: torch.Tensor) -> torch.Tensor:
    """A uint8 CHW image as its rounded BT.601 luma in every channel."""
    if img.shape[0] == 1:
        return img
    y = luma(img).round().clamp(0, 255).to(torch.uint8)
    return y.expand(img.shape[0], -1, -1).contiguous()


def _augment(*imgs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Apply one random element of the 8 flips/rotations to every image alike."""
    hflip, vflip, transpose = (bool(b) for b in torch.randint(2, (3,)).tolist())
    out = []
    for img in imgs:
        if hflip:
            img = img.flip(-1)
        if vflip:
            img = img.flip(-2)
        if transpose:
            img = img.transpose(-1, -2)
        out.append(img.contiguous())
    return tuple(out)


class _SRDataset(Dataset):
    """Shared machinery: up-front validation, optional cache, skip-or-raise, repeat."""

    name = "dataset"

    def __init__(self, entries: list[tuple[Path, ...]], where: str, scale: int,
                 crop: int | None, augment: bool, repeat: int, on_error: str, cache: bool,
                 limit: int = 0, rejected: list[tuple[Path, str]] | None = None) -> None:
        self.scale, self.crop, self.augment, self.repeat = scale, crop or 0, augment, repeat
        self.on_error, self.where = on_error, where
        bad = list(rejected or [])
        if bad and on_error == "raise":
            path, problem = bad[0]
            raise ImageError.about(path, problem)
        good: list[tuple[Path, ...]] = []
        cached: list[tuple[torch.Tensor, ...]] = []
        for entry in entries:
            if limit and len(good) >= limit:
                break
            try:
                if cache:  # decoding everything also finds what header checks miss
                    cached.append(self._decode(entry))
                else:
                    self._probe(entry)
            except ImageError as exc:
                if on_error == "raise":
                    raise
                bad.append((exc.path or entry[0], exc.problem))
                continue
            good.append(entry)
        if not good:
            raise UserError(f"{self.name}: no usable images in {where}"
                            + (f" ({self._summary(bad, len(bad))})" if bad else ""))
        if bad:
            warnings.warn(f"{self.name}: {self._summary(bad, len(good) + len(bad))}",
                          PlfwWarning, stacklevel=3)
        self.entries = good
        self._cache = cached if cache else None
        self._bad_at_runtime: set[int] = set()

    def _summary(self, bad: list[tuple[Path, str]], total: int) -> str:
        shown = "; ".join(f"{show_path(p.name)}: {why}" for p, why in bad[:_SHOWN_BAD])
        more = f"; and {len(bad) - _SHOWN_BAD} more" if len(bad) > _SHOWN_BAD else ""
        return f"skipped {len(bad)} of {total} files in {self.where} ({shown}{more})"

    def _probe(self, entry: tuple[Path, ...]) -> None:
        """Cheap validity check of one entry's files (headers only); raises ImageError."""
        raise NotImplementedError

    def _decode(self, entry: tuple[Path, ...]) -> tuple[torch.Tensor, ...]:
        """One entry's images as uint8 CHW tensors; raises ImageError."""
        raise NotImplementedError

    def _sample(self, imgs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images of one entry -> uint8 (lr, hr)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.entries) * self.repeat

    @property
    def names(self) -> list[str]:
        """File stems per item (the trainer labels validation images with them)."""
        return [self.entries[i % len(self.entries)][0].stem for i in range(len(self))]

    def _images(self, i: int) -> tuple[torch.Tensor, ...]:
        if self._cache is not None:
            return self._cache[i]
        # Header checks cannot catch everything (a truncated JPEG decodes until it ends), so a
        # file can still fail here: skip it for the rest of this process, or stop.
        while True:
            try:
                return self._decode(self.entries[i])
            except ImageError as exc:
                if self.on_error == "raise":
                    raise
                self._bad_at_runtime.add(i)
                warnings.warn(f"{self.name}: skipping {exc}", PlfwWarning, stacklevel=2)
                usable = [j for j in range(len(self.entries)) if j not in self._bad_at_runtime]
                if not usable:
                    raise UserError(f"{self.name}: no usable images left in {self.where}") from None
                i = usable[_randint(len(usable))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range ({len(self)} items)")
        lr, hr = self._sample(self._images(index % len(self.entries)))
        return lr.float() / 255, hr.float() / 255


class HRFolder(_SRDataset):
    """HR images; each item is a random HR crop and its MATLAB-bicubic LR."""

    name = "hr_folder"

    def __init__(self, p: HRFolderParams) -> None:
        _check_common(self.name, p.scale, p.crop, p.repeat, p.on_error)
        if p.max_images < 0:
            raise UserError(f"{self.name}: max_images must be >= 0, got {p.max_images}")
        if not 0.0 <= p.grey <= 1.0:
            raise UserError(f"dataset '{self.name}': grey must be a share between 0 and 1, got "
                            f"{p.grey}")
        self.grey = p.grey
        paths = [x for root in (p.root, *p.more_roots)
                 for x in list_images(root, recursive=p.recursive)]
        where = " + ".join(show_path(r) for r in (p.root, *p.more_roots))
        super().__init__([(x,) for x in paths], where, p.scale, p.crop, p.augment,
                         p.repeat, p.on_error, p.cache, limit=p.max_images)

    def _probe(self, entry: tuple[Path, ...]) -> None:
        w, h = probe_image(entry[0])
        self._check_size(entry[0], h, w)

    def _check_size(self, path: Path, h: int, w: int) -> None:
        if min(h, w) < self.scale:
            raise ImageError.about(path, f"{w}x{h} is smaller than the scale {self.scale}")

    def _decode(self, entry: tuple[Path, ...]) -> tuple[torch.Tensor, ...]:
        hr = load_image_uint8(entry[0])
        self._check_size(entry[0], hr.shape[1], hr.shape[2])
        return (hr,)

    def _sample(self, imgs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        hr = self.hr_crop(imgs)
        if self.grey and float(torch.rand(())) < self.grey:  # no draw at all when grey is 0
            hr = grey_uint8(hr)
        return bicubic_downscale_uint8(hr, self.scale), hr

    def hr_crop(self, imgs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The item's uint8 HR crop (random place, random flip/transpose when augmenting)."""
        (hr,) = imgs
        _, h, w = hr.shape
        s, c = self.scale, self.crop
        if c:
            dh, dw = max(c - h, 0), max(c - w, 0)
            hr = _pad(hr, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
            y, x = _randint(hr.shape[1] - c + 1), _randint(hr.shape[2] - c + 1)
            hr = hr[:, y:y + c, x:x + c]
        else:
            hr = hr[:, : h - h % s, : w - w % s]
        if self.augment:
            (hr,) = _augment(hr)
        return hr.contiguous()


class PairedFolders(_SRDataset):
    """Ready-made HR/LR pairs; crops are taken at matching places in both."""

    name = "paired_folders"

    def __init__(self, p: PairedFoldersParams) -> None:
        _check_common(self.name, p.scale, p.crop, p.repeat, p.on_error)
        hrs = list_images(p.hr_root)
        lr_by_stem = stem_candidates([hr.stem for hr in hrs],
                                     [(path.stem, path) for path in list_images(p.lr_root)],
                                     lr=True)
        entries, rejected = [], []
        for hr in hrs:
            lrs = lr_by_stem.get(hr.stem, [])
            if len(lrs) == 1:
                entries.append((hr, lrs[0]))
            elif not lrs:
                stem = show_path(hr.stem)
                rejected.append((hr, f"no LR image named {stem}, {stem}x{p.scale}, "
                                     f"{stem}_x{p.scale}, {stem}_LR or the like (any image "
                                     f"extension) in {show_path(p.lr_root)}"))
            else:
                names = ", ".join(show_path(x.name) for x in lrs)
                rejected.append((hr, f"several LR images match it ({names})"))
        where = f"{show_path(p.hr_root)} + {show_path(p.lr_root)}"
        super().__init__(entries, where, p.scale, p.crop, p.augment, p.repeat, p.on_error,
                         p.cache, rejected=rejected)

    def _check_sizes(self, hr: Path, hr_wh: tuple[int, int], lr_wh: tuple[int, int]) -> None:
        s = self.scale
        if hr_wh != (lr_wh[0] * s, lr_wh[1] * s):
            problem = (f"HR is {hr_wh[0]}x{hr_wh[1]} but its LR is {lr_wh[0]}x{lr_wh[1]}; "
                       f"HR must be exactly {s}x the LR")
            raise ImageError.about(hr, problem)

    def _probe(self, entry: tuple[Path, ...]) -> None:
        hr, lr = entry
        self._check_sizes(hr, probe_image(hr), probe_image(lr))

    def _decode(self, entry: tuple[Path, ...]) -> tuple[torch.Tensor, ...]:
        hr, lr = load_image_uint8(entry[0]), load_image_uint8(entry[1])
        self._check_sizes(entry[0], (hr.shape[2], hr.shape[1]), (lr.shape[2], lr.shape[1]))
        return hr, lr

    def _sample(self, imgs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        hr, lr = imgs
        s = self.scale
        if self.crop:
            c = self.crop // s
            _, h, w = lr.shape
            dh, dw = max(c - h, 0), max(c - w, 0)
            top, left = dh // 2, dw // 2
            lr = _pad(lr, top, dh - top, left, dw - left)
            hr = _pad(hr, s * top, s * (dh - top), s * left, s * (dw - left))
            y, x = _randint(lr.shape[1] - c + 1), _randint(lr.shape[2] - c + 1)
            lr = lr[:, y:y + c, x:x + c]
            hr = hr[:, s * y:s * (y + c), s * x:s * (x + c)]
        if self.augment:
            lr, hr = _augment(lr, hr)
        return lr, hr


@plfw.hookimpl
def plfw_register_datasets(register: Any) -> None:
    register("hr_folder", HRFolder, HRFolderParams,
             description="HR images; random crops with MATLAB-bicubic LR made on the fly")
    register("paired_folders", PairedFolders, PairedFoldersParams,
             description="HR/LR image pairs matched by file name")
