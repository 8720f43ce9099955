"""`plfw mos create`: check every input image, then write a study folder (see plfw.mos.study).

Kept apart from plfw.mos.study so that serving and reporting never import torch.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from plfw.core.errors import UserError
from plfw.evaluation.stems import match_stems
from plfw.imaging.images import IMAGE_SUFFIXES, load_image, save_image
from plfw.imaging.imresize import bicubic_downscale_uint8
from plfw.mos.study import ANCHORS, FORMAT, MANIFEST, NEAREST, ORIGINAL, Item, Study, load_study

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")


def scan_images(root: Path, dataset: str | None) -> dict[tuple[str, str], Path]:
    """(data set, stem) -> file. Images directly in ``root`` form one data set (``dataset`` or
    'default'); otherwise each subfolder holding images is a data set named after it."""
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    direct = _images_in(root)
    if direct:
        label = dataset or "default"
        return {(label, stem): p for stem, p in direct.items()}
    if dataset is not None:
        sub = root / dataset
        return {(dataset, stem): p for stem, p in _images_in(sub).items()} if sub.is_dir() else {}
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        found.update({(sub.name, stem): p for stem, p in _images_in(sub).items()})
    return found


def match_references(found: dict[tuple[str, str], Path], refs: dict[tuple[str, str], Path],
                     where: str) -> dict[tuple[str, str], Path]:
    """``found`` re-keyed by the reference image each file is an output of, per data set, with
    plfw's one stem rule (plfw.evaluation.stems: ``baby_x4.png`` from ``plfw upscale`` is
    ``baby``)."""
    by_set: dict[str, dict[str, Path]] = {}
    for (label, stem), path in found.items():
        by_set.setdefault(label, {})[stem] = path
    out = {}
    for label, files in by_set.items():
        stems = [stem for d, stem in refs if d == label]
        out.update({(label, stem): p for stem, p in match_stems(stems, files, where).items()})
    return out


def _images_in(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in out:
                raise UserError(f"{folder}: two images named {p.stem!r} ({out[p.stem].name}, "
                                f"{p.name}); keep one")
            out[p.stem] = p
    return out


def _load_u8(path: Path) -> torch.Tensor:
    """uint8 RGB, CHW (plfw.imaging.images: EXIF applied, alpha on white, one-line ImageError)."""
    return load_image(path).mul(255).round().to(torch.uint8)


def _size(img: torch.Tensor) -> str:
    return f"{img.shape[2]}x{img.shape[1]}"


def _nearest_up(lr: torch.Tensor, h: int, w: int) -> torch.Tensor:
    up = Image.fromarray(lr.permute(1, 2, 0).numpy()).resize((w, h), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(up).copy()).permute(2, 0, 1)


def _nearest_from_reference(ref: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-style bicubic downscale by ``scale`` (the usual SR LR), then nearest-neighbour back up
    to the reference size: the paper's score-1 anchor."""
    h, w = ref.shape[1:]
    if h < scale or w < scale:
        raise UserError(f"reference image {w}x{h} is smaller than the scale factor {scale}")
    lr = bicubic_downscale_uint8(ref[:, : h - h % scale, : w - w % scale], scale)
    return _nearest_up(lr, h, w)


def _nearest_from_lr(lr: torch.Tensor, ref: torch.Tensor, scale: int, path: Path) -> torch.Tensor:
    h, w = ref.shape[1:]
    if tuple(lr.shape[1:]) != (h // scale, w // scale):
        raise UserError(f"{path}: LR image is {_size(lr)} but the reference is {w}x{h} "
                        f"(expected {w // scale}x{h // scale} at --scale {scale})")
    return _nearest_up(lr, h, w)


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise UserError(f"method name {name!r}: use 1-40 letters, digits, '_', '-', '.', '+'")
    if name in ANCHORS:
        raise UserError(f"method name {name!r} is reserved for the calibration anchors; rename it")


def create_study(study_dir: str | Path, methods: dict[str, Path], reference: str | Path, *,
                 scale: int = 4, lr: str | Path | None = None, dataset: str | None = None,
                 calibration: int = 3, seed: int | None = None) -> Study:
    """Check every input image, then write the study folder (all or nothing: a failed create
    leaves no folder behind). ``methods`` maps a display name to a folder laid out like
    ``reference`` (same data-set subfolders, same image stems, or stems with the suffixes SR
    tools add, e.g. ``plfw upscale``'s ``_x4``: see plfw.evaluation.stems; extension may differ)."""
    study_dir = Path(study_dir)
    if study_dir.exists() and (not study_dir.is_dir() or any(study_dir.iterdir())):
        raise UserError(f"{study_dir} already exists and is not empty; choose a new study folder")
    if not methods:
        raise UserError("no methods given; add --methods NAME=DIR (e.g. bicubic=out/bicubic)")
    for name in methods:
        _check_name(name)
    if scale < 2:
        raise UserError(f"--scale {scale}: must be 2 or more")
    if calibration < 0:
        raise UserError(f"--calibration {calibration}: must be 0 or more")
    refs = scan_images(Path(reference), dataset)
    if not refs:
        raise UserError(f"{reference}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    sources = {}
    for name, folder in methods.items():
        if not Path(folder).is_dir():
            raise UserError(f"--methods {name}={folder}: not a folder")
        sources[name] = match_references(scan_images(Path(folder), dataset), refs, str(folder))
    lrs = (match_references(scan_images(Path(lr), dataset), refs, str(lr)) if lr is not None
           else None)
    for name, found in [*sources.items(), *([("--lr", lrs)] if lrs is not None else [])]:
        missing = sorted(set(refs) - set(found))
        if missing:
            shown = ", ".join(f"{d}/{n}" for d, n in missing[:4])
            shown += ", ..." if len(missing) > 4 else ""
            where = methods.get(name, lr)
            raise UserError(f"{name} ({where}) lacks {len(missing)} of {len(refs)} reference "
                            f"images: {shown}")

    seed = secrets.randbits(31) if seed is None else seed
    study_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{study_dir.name}.", dir=study_dir.parent))
    try:
        (tmp / "images").mkdir()
        items: list[Item] = []
        keys = sorted(refs)
        for key in keys:
            ref = _load_u8(refs[key])
            versions = {}
            for name, found in sources.items():
                img = _load_u8(found[key])
                if img.shape != ref.shape:
                    raise UserError(f"{found[key]}: {_size(img)} but reference {refs[key].name} "
                                    f"is {_size(ref)}; outputs must match the reference size")
                versions[name] = img
            if lrs is not None:
                versions[NEAREST] = _nearest_from_lr(_load_u8(lrs[key]), ref, scale, lrs[key])
            else:
                versions[NEAREST] = _nearest_from_reference(ref, scale)
            versions[ORIGINAL] = ref
            for method, img in versions.items():
                token = secrets.token_hex(8)
                save_image(img, tmp / "images" / f"{token}.png")
                items.append(Item(token, key[0], key[1], method, f"images/{token}.png"))
        items += _calibration_items(items, keys, calibration, seed)
        order = (NEAREST, *methods, ORIGINAL)
        manifest = {
            "format": FORMAT, "scale": scale, "seed": seed, "methods": list(order),
            "datasets": sorted({d for d, _ in keys}), "images": [list(k) for k in keys],
            "sources": {name: str(Path(d).resolve()) for name, d in
                        [*methods.items(), (ORIGINAL, reference)]}
            | {NEAREST: str(Path(lr).resolve()) if lr is not None
               else f"reference, bicubic x1/{scale} then nearest x{scale}"},
            "items": [asdict(i) for i in items],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if study_dir.exists():
            study_dir.rmdir()
        os.replace(tmp, study_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_study(study_dir)


def _calibration_items(items: list[Item], keys: list[tuple[str, str]], count: int,
                       seed: int) -> list[Item]:
    """Anchored copies (own ids, same files) of the nearest/original pair of ``count`` images."""
    chosen = sorted(random.Random(seed).sample(keys, min(count, len(keys))))
    by_key = {(i.dataset, i.image, i.method): i for i in items}
    out = []
    for key in chosen:
        for method in (NEAREST, ORIGINAL):
            src = by_key[(*key, method)]
            out.append(Item(secrets.token_hex(8), src.dataset, src.image, method, src.file,
                            phase="calibration", anchor=ANCHORS[method]))
    return out
