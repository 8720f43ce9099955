"""``plfw upscale``: super-resolve files in tiles, one failure never stops the others.

Images keep what their files have (see :func:`plfw.imaging.images.load_picture`):

- gray stays gray: the model sees the gray channel three times, the result is their mean; an
  RGB file whose channels are all equal (a grey photo saved as colour) gets that mean in each
  channel, so a model trained on colour crops cannot add colour speckle to it;
- alpha (RGBA, LA, palette transparency) is upscaled on its own, by MATLAB-style bicubic
  (``alpha="bicubic"``, the default: sharp-edged masks stay clean) or by the model
  (``alpha="model"``), and written back as RGBA / LA; ``alpha="drop"`` composites on white
  first (what viewers show) and writes no alpha. JPEG output has no alpha, so it implies drop;
- 16-bit PNGs come out as 16-bit PNGs, run through the model in fp32 whatever ``precision``
  says (bf16 keeps 8 bits of mantissa, which would waste the extra depth).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from plfw.core.errors import DiskFull, UserError
from plfw.core.registry import Registry
from plfw.imaging.images import (
    IMAGE_SUFFIXES,
    ImageError,
    Picture,
    list_images,
    load_picture,
    save_picture,
    show_path,
)
from plfw.imaging.imresize import imresize
from plfw.inference.ensemble import DIHEDRAL, dihedral_mean
from plfw.inference.model import open_model
from plfw.inference.tiling import upscale_tiled

ALPHA_MODES = ("bicubic", "model", "drop")
OUT_FORMATS = ("png", "webp", "jpg")


def _expand(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        else:
            files.append(path)
    return files


def _check_writable(out: Path) -> None:
    """``out``, or the folder it would be made in, must take files (a read-only folder or file
    system is one line before the model loads, not one failure per input)."""
    folder = out
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        what = "not a folder" if not folder.is_dir() else "not writable"
        raise UserError(f"--out {out}: {folder} is {what}; choose another --out")


def _target(path: Path, out: Path, suffix: str, out_format: str) -> Path:
    return out / f"{path.stem}{suffix}.{out_format}"


def _identity(path: Path) -> tuple[int, int] | Path:
    """What a path is on disk (device and inode when it exists: hard links, case-insensitive
    names and symlinks compare equal), else its resolved form."""
    try:
        st = path.stat()
    except OSError:
        return path.resolve()
    return (st.st_dev, st.st_ino)


def _check_targets(files: list[Path], out: Path, suffix: str, out_format: str) -> list[Path]:
    """The inputs once each (a file named twice, or by its folder and by name, is upscaled
    once), after refusing any run that would lose data whatever ``--overwrite`` says: two
    inputs with one output name (``a/x.png`` and ``b/x.png``; outputs are named by stem, so
    they would replace each other), and an output that is one of the inputs (``--out`` the
    input folder with ``--suffix ''``, or a previous output upscaled again into its folder)."""
    unique: dict[tuple[int, int] | Path, Path] = {}
    for path in files:
        unique.setdefault(_identity(path), path)
    files = list(unique.values())
    by_target: dict[tuple[int, int] | Path, list[Path]] = {}
    for path in files:
        target = _target(path, out, suffix, out_format)
        key = _identity(target)
        if key in unique:
            raise UserError(f"output {target} would replace the input {unique[key]}: choose "
                            f"another --out or a --suffix (outputs are never written over "
                            f"inputs)")
        by_target.setdefault(key, []).append(path)
    clashes = [paths for paths in by_target.values() if len(paths) > 1]
    if clashes:
        first = clashes[0]
        name = _target(first[0], out, suffix, out_format).name
        more = f"; {len(clashes) - 1} more such name(s)" if len(clashes) > 1 else ""
        raise UserError(f"{len(first)} inputs would write the same output {name} "
                        f"({', '.join(map(str, first[:3]))}{more}): upscale them into "
                        f"separate --out folders, or rename them")
    return files


def _on_white(colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return colour * alpha + (1 - alpha)


def upscale_files(inputs: list[str], out: str | Path, registry: Registry, model: str = "srgan",
                  tile: int = 384,
                  overlap: int = 32, overwrite: bool = False, device: str = "auto",
                  precision: str = "auto", progress: bool = True, alpha: str = "bicubic",
                  out_format: str = "png", quality: int = 95, suffix: str | None = None,
                  json_lines: bool = False, self_ensemble: bool = False
                  ) -> list[tuple[Path, str]]:
    """Upscale each input into ``out``/<stem><suffix>.<out_format> (suffix default
    ``_x<scale>``); return the (file, reason) failures. An output that exists is left alone
    without ``overwrite`` and its input counted as skipped, not failed (a rerun finishes what
    an earlier run left). With ``json_lines`` one JSON record per file goes to stdout (in, out,
    size, seconds, error, skipped) and the summary to stderr.
    ``self_ensemble`` averages the model over the 8 flips and rotations
    (:mod:`plfw.inference.ensemble`, 8x the time)."""
    if alpha not in ALPHA_MODES:
        raise UserError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    if out_format not in OUT_FORMATS:
        raise UserError(f"--out-format must be one of {', '.join(OUT_FORMATS)}, "
                        f"got {out_format!r}")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality must be 1..100, got {quality}")
    if suffix is not None and ("/" in suffix or "\\" in suffix):
        raise UserError(f"--suffix must not contain a path separator, got {suffix!r}")
    if tile < 0 or overlap < 0:
        raise UserError(f"--tile and --overlap must be >= 0 (--tile 0: the whole image at "
                        f"once), got --tile {tile} --overlap {overlap}")
    files = _expand(inputs)
    _check_writable(Path(out))
    opened = open_model(model, registry, device, precision)
    scale = opened.scale
    suffix = f"_x{scale}" if suffix is None else suffix
    out = Path(out)
    files = _check_targets(files, out, suffix, out_format)
    failures: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    pixels, started = 0, time.perf_counter()
    net = opened.batch
    passes = len(DIHEDRAL) if self_ensemble else 1
    fp32: list[Any] = []  # the fp32 runner for 16-bit images, made when first needed
    stdout = sys.stderr if json_lines else sys.stdout
    outer = tqdm(files, desc="images", unit="file", disable=not progress or len(files) < 2,
                 file=sys.stderr)
    for path in outer:
        target = _target(path, out, suffix, out_format)
        began = time.perf_counter()
        record: dict[str, Any] = {"in": show_path(path), "out": None, "size": None,
                                  "seconds": None, "error": None, "skipped": None}
        try:
            if path.suffix.lower() not in IMAGE_SUFFIXES and path.exists():
                raise ImageError(f"{path}: not an image file (expected one of "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES))})")
            if target.exists() and not overwrite:
                skipped.append(path)
                record.update(out=show_path(target), skipped="output exists")
                if not json_lines:
                    tqdm.write(f"plfw: skipped {path}: {target} exists (--overwrite replaces "
                               f"it)", file=sys.stderr)
                record["seconds"] = round(time.perf_counter() - began, 3)
                if json_lines:
                    print(json.dumps(record), flush=True)
                continue
            pic = load_picture(path)
            if pic.bits == 16 and not fp32:
                fp32.append(opened.with_precision("fp32").batch)
            run = fp32[0] if pic.bits == 16 else net
            bar = tqdm(desc=path.name, unit="tile", disable=not progress, leave=False,
                       file=sys.stderr)

            def tick(done: int, total: int, bar: tqdm = bar) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            def tiled(rgb: torch.Tensor, i: int, tick: Any = tick, run: Any = run
                      ) -> torch.Tensor:
                """Pass ``i`` of the ensemble; the bar counts the tiles of all passes."""
                return upscale_tiled(run, rgb, scale, tile=tile, overlap=overlap,
                                     progress=lambda d, t: tick(i * t + d, passes * t))

            def through_model(planes: torch.Tensor, tiled: Any = tiled) -> torch.Tensor:
                """C=1 or 3 planes -> upscaled planes, gray as three equal channels."""
                rgb = planes.expand(3, -1, -1) if planes.shape[0] == 1 else planes
                sr = dihedral_mean(tiled, rgb, passes)
                if planes.shape[0] == 1:
                    return sr.mean(0, keepdim=True)
                if bool((planes == planes[:1]).all()):  # grey content in an RGB file
                    return sr.mean(0, keepdim=True).expand(3, -1, -1)
                return sr

            colour, mask = pic.colour, pic.alpha
            if mask is not None and (alpha == "drop" or out_format == "jpg"):
                colour, mask = _on_white(colour, mask), None
            sr = through_model(colour)
            if mask is not None:
                if alpha == "model":
                    mask = through_model(mask)
                else:
                    mask = imresize(mask[None].float(), scale=scale)[0].clamp(0, 1)
            bar.close()
            save_picture(Picture(sr.float(), mask, pic.bits), target, overwrite=overwrite,
                         quality=quality)
            pixels += sr.shape[-1] * sr.shape[-2]
            record.update(out=show_path(target), size=[int(sr.shape[-1]), int(sr.shape[-2])])
            if not json_lines:
                tqdm.write(f"{path} -> {target}", file=stdout)
        except DiskFull:
            raise  # every later file would fail too: stop with the one line
        except UserError as exc:
            failures.append((path, str(exc)))
            record["error"] = str(exc)
            if not json_lines:
                tqdm.write(f"plfw: skipped {path}: {exc}", file=sys.stderr)
        record["seconds"] = round(time.perf_counter() - began, 3)
        if json_lines:
            print(json.dumps(record), flush=True)
    outer.close()
    seconds = time.perf_counter() - started
    written = len(files) - len(failures) - len(skipped)
    if pixels:
        print(f"{written} image(s), {pixels / 1e6:.2f} output megapixels in "
              f"{seconds:.1f} s ({pixels / 1e6 / max(seconds, 1e-9):.3f} MP/s)", file=stdout)
    if failures or skipped:
        parts = [f"{written} written"]
        if skipped:
            parts.append(f"{len(skipped)} skipped (output exists; --overwrite replaces it)")
        if failures:
            parts.append(f"{len(failures)} failed")
        print(f"plfw: {len(files)} input(s): {', '.join(parts)}", file=sys.stderr)
    return failures
