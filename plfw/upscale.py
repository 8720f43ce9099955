"""``plfw upscale``: super-resolve files in tiles, one failure never stops the others."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from plfw.errors import UserError
from plfw.generators import batch_runner, load_generator
from plfw.images import IMAGE_SUFFIXES, ImageError, list_images, load_image, save_image
from plfw.runtime import make_runtime
from plfw.tiling import upscale_tiled


def _expand(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        else:
            files.append(path)
    return files


def upscale_files(inputs: list[str], out: str | Path, model: str = "srgan", tile: int = 128,
                  overlap: int = 16, overwrite: bool = False, device: str = "auto",
                  precision: str = "auto", progress: bool = True) -> list[tuple[Path, str]]:
    """Upscale each input into ``out``/<stem>_x<scale>.png; return the (file, reason) failures."""
    rt = make_runtime(device, precision, "false")
    generator, out_range = load_generator(model)
    generator = generator.to(rt.device)
    scale = int(getattr(generator, "scale", 4))
    out = Path(out)
    files = _expand(inputs)
    failures: list[tuple[Path, str]] = []
    pixels, started = 0, time.perf_counter()
    net = batch_runner(generator, out_range, rt)

    for path in files:
        target = out / f"{path.stem}_x{scale}.png"
        try:
            if path.suffix.lower() not in IMAGE_SUFFIXES and path.exists():
                raise ImageError(f"{path}: not an image file (expected one of "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES))})")
            if target.exists() and not overwrite:
                raise UserError(f"{target} exists; pass --overwrite to replace it")
            lr = load_image(path)
            bar = tqdm(desc=path.name, unit="tile", disable=not progress, leave=False,
                       file=sys.stderr)

            def tick(done: int, total: int, bar: tqdm = bar) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            sr = upscale_tiled(net, lr, scale, tile=tile, overlap=overlap, progress=tick)
            bar.close()
            out.mkdir(parents=True, exist_ok=True)
            save_image(sr, target, overwrite=overwrite)
            pixels += sr.shape[-1] * sr.shape[-2]
            print(f"{path} -> {target}")
        except UserError as exc:
            failures.append((path, str(exc)))
            print(f"plfw: skipped {path}: {exc}", file=sys.stderr)
    seconds = time.perf_counter() - started
    if pixels:
        print(f"{len(files) - len(failures)} image(s), {pixels / 1e6:.2f} output megapixels in "
              f"{seconds:.1f} s ({pixels / 1e6 / max(seconds, 1e-9):.3f} MP/s)")
    if failures:
        print(f"plfw: {len(failures)} of {len(files)} input(s) failed", file=sys.stderr)
    return failures
