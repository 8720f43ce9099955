"""Scoring SR methods the way the paper does: per image, then the mean.

A *method* is any callable LR -> SR on single CHW images in [0, 1]: bicubic (MATLAB-compatible),
a trained generator, or a tiled runner around one. Grayscale benchmark images (Set14 ``bridge``)
are scored on their single channel, as the paper's tools did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plfw.core.errors import UserError
from plfw.evaluation.metrics import psnr_y, ssim_y
from plfw.evaluation.stems import SUFFIX_HELP, match_stems
from plfw.imaging.images import list_images, load_gray_or_rgb
from plfw.imaging.imresize import bicubic_downscale_uint8, imresize

Method = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Pair:
    name: str
    lr: torch.Tensor  # CHW, C = 1 or 3, [0, 1]
    hr: torch.Tensor


def load_pairs(hr_dir: str | Path, lr_dir: str | Path | None, scale: int,
               limit: int = 0) -> list[Pair]:
    """HR images (+ LR by file stem, or LR made with the MATLAB-compatible bicubic downscale)."""
    hr_paths = list_images(hr_dir)
    if limit:
        hr_paths = hr_paths[:limit]
    lr_by_stem = {p.stem: p for p in list_images(lr_dir)} if lr_dir else {}
    pairs = []
    for path in hr_paths:
        hr = load_gray_or_rgb(path)
        if lr_dir:
            if path.stem not in lr_by_stem:
                raise UserError(f"{lr_dir}: no LR image for '{path.name}' (LR files are matched "
                                "to HR files by name)")
            lr = load_gray_or_rgb(lr_by_stem[path.stem])
            if lr.shape[0] != hr.shape[0]:
                lr = lr.mean(0, keepdim=True) if hr.shape[0] == 1 else lr.expand(3, -1, -1)
        else:
            h, w = hr.shape[-2:]
            if min(h, w) < scale:
                raise UserError(f"{path}: the HR image ({w}x{h}) is smaller than --scale "
                                f"{scale}; check --scale")
            hr = hr[:, : h - h % scale, : w - w % scale]
            lr = bicubic_downscale_uint8(hr * 255.0, scale).float() / 255.0
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
            raise UserError(f"{path}: HR size {tuple(hr.shape[-2:])} is not {scale}x the LR size "
                            f"{tuple(lr.shape[-2:])}; check --scale or the LR folder")
        pairs.append(Pair(path.stem, lr, hr))
    return pairs


def bicubic(scale: int) -> Method:
    """MATLAB-compatible bicubic upscaling, quantised to 8 bits like a saved image."""

    def run(lr: torch.Tensor) -> torch.Tensor:
        return (imresize(lr, scale=scale).clamp(0, 1) * 255).round() / 255

    return run


def _match_channels(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    if hr.shape[0] == 1 and sr.shape[0] == 3:
        return sr.mean(0, keepdim=True)
    if hr.shape[0] == 3 and sr.shape[0] == 1:
        return sr.expand(3, -1, -1)
    return sr


Metric = Callable[[torch.Tensor, torch.Tensor], float]


def default_metrics(border: int) -> dict[str, Metric]:
    """PSNR-Y and SSIM-Y with ``border`` pixels cropped: the paper's measures."""
    return {"psnr_y": lambda sr, hr: psnr_y(sr, hr, border),
            "ssim_y": lambda sr, hr: ssim_y(sr, hr, border)}


def metric_label(name: str, metric: Any) -> str:
    """How tables head a metric: its own ``label`` (e.g. 'PSNR-Y [dB]'), else its name."""
    return str(getattr(metric, "label", None) or name)


def format_score(metric: Any, value: float) -> str:
    """A score as the metric asks (its ``format``, e.g. '{:.2f}'), else four decimals."""
    return str(getattr(metric, "format", None) or "{:.4f}").format(value)


def _scores(images: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
            metrics: Mapping[str, Metric], progress: Callable[[str], None] | None,
            border: int | None = None) -> dict[str, Any]:
    """Per-image rows and means over (name, sr, hr) triples (sr already on hr's channels);
    an image that ``border`` would crop away entirely is a one-line error naming it."""
    rows = []
    for name, sr, hr in images:
        if border is not None and 2 * border >= min(hr.shape[-2:]):
            h, w = hr.shape[-2:]
            raise UserError(f"--border {border} crops all of '{name}' ({w}x{h} HR): use a "
                            f"border below {(min(h, w) + 1) // 2} (default: the scale)")
        row: dict[str, Any] = {"name": name}
        for key, metric in metrics.items():
            try:
                row[key] = float(metric(sr, hr))
            except ValueError as exc:  # an image too small for the metric (after the border)
                raise UserError(f"'{name}': {key}: {str(exc).splitlines()[0][:200]}"
                                + (f" (--border {border})" if border is not None else "")
                                ) from None
        rows.append(row)
        if progress:
            progress(name)
    if not rows:
        raise UserError("nothing to evaluate: no image pairs")
    means = {k: sum(r[k] for r in rows) / len(rows) for k in metrics}
    return {**means, "images": len(rows), "per_image": rows}


def evaluate(method: Method, pairs: Sequence[Pair], border: int,
             progress: Callable[[str], None] | None = None,
             metrics: Mapping[str, Metric] | None = None) -> dict[str, Any]:
    """Per-image and mean scores of ``method`` over ``pairs``: PSNR-Y and SSIM-Y unless
    ``metrics`` (name -> callable(sr, hr)) says otherwise (e.g. a config's metric plugins)."""
    if not pairs:
        raise UserError("nothing to evaluate: no image pairs")
    metrics = metrics or default_metrics(border)

    def images() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for pair in pairs:
            lr = pair.lr if pair.lr.shape[0] == 3 else pair.lr.expand(3, -1, -1)
            with torch.inference_mode():
                sr = _match_channels(method(lr).float().cpu(), pair.hr)
            yield pair.name, sr, pair.hr

    return _scores(images(), metrics, progress, border)


def sr_files(sr_dir: str | Path, hr_dir: str | Path, limit: int = 0
             ) -> list[tuple[str, Path, Path]]:
    """(name, SR file, HR file) for every HR image, its SR output found by stem with the
    suffix rule of :mod:`plfw.evaluation.stems`; a missing SR image is a one-line error naming
    it."""
    hr_paths = list_images(hr_dir)
    if limit:
        hr_paths = hr_paths[:limit]
    candidates: dict[str, Path] = {}
    for path in list_images(sr_dir):
        if path.stem in candidates:
            raise UserError(f"{sr_dir}: two images named {path.stem!r} "
                            f"({candidates[path.stem].name}, {path.name}); keep one")
        candidates[path.stem] = path
    found = match_stems([p.stem for p in hr_paths], candidates, str(sr_dir))
    missing = [p.name for p in hr_paths if p.stem not in found]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise UserError(f"{sr_dir}: no SR image for {len(missing)} of {len(hr_paths)} HR images "
                        f"({shown}); SR files are matched by name: {SUFFIX_HELP}")
    return [(p.stem, found[p.stem], p) for p in hr_paths]


def evaluate_sr(sr_dir: str | Path, hr_dir: str | Path, scale: int,
                metrics: Mapping[str, Metric], limit: int = 0,
                progress: Callable[[str], None] | None = None,
                border: int | None = None) -> dict[str, Any]:
    """Score existing SR images against HR ones, exactly as :func:`evaluate` scores a model
    (``border``: the metrics' border, checked to leave pixels in every image).

    An SR image must have the HR size, or the HR size cut down to a multiple of ``scale`` (what
    upscaling the usual LR gives; the HR image is then cropped the same way, as for a model)."""
    files = sr_files(sr_dir, hr_dir, limit)

    def images() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for name, sr_path, hr_path in files:
            sr, hr = load_gray_or_rgb(sr_path), load_gray_or_rgb(hr_path)
            h, w = hr.shape[-2:]
            if tuple(sr.shape[-2:]) == (h - h % scale, w - w % scale):
                hr = hr[:, : h - h % scale, : w - w % scale]
            if sr.shape[-2:] != hr.shape[-2:]:
                raise UserError(f"{sr_path}: SR image is {sr.shape[-1]}x{sr.shape[-2]} but HR "
                                f"{hr_path} is {w}x{h}; they must match (or the HR cut to a "
                                f"multiple of --scale {scale})")
            yield name, _match_channels(sr, hr), hr

    return _scores(images(), metrics, progress, border)


def dataset_pairs(dataset: Any, limit: int = 0) -> list[Pair]:
    """The first ``limit`` (all when 0) items of a dataset plugin as named pairs; names come
    from the dataset's ``names`` when it has them."""
    count = min(len(dataset), limit) if limit else len(dataset)
    names = getattr(dataset, "names", None) or [f"image{i:03d}" for i in range(count)]
    return [Pair(str(names[i]), *dataset[i]) for i in range(count)]


def summary_table(summary: dict[str, Any], images: int,
                  metrics: Mapping[str, Any] | None = None) -> str:
    """Markdown table of the mean of every metric in ``summary`` ({method: {metric: mean,
    per_image: ...}}) per method, headed and formatted as each of ``metrics`` asks."""
    metrics = metrics or {}
    keys = [k for k in next(iter(summary.values())) if k != "per_image"]
    lines = [f"Mean over {images} validation images (Y channel, border = scale).", "",
             "| method | " + " | ".join(metric_label(k, metrics.get(k)) for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for name, r in summary.items():
        cells = [format_score(metrics.get(k), r[k]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
