"""What a finished run shows: every method scored on the validation images
(summary.json / summary.md) and side-by-side crops (summary.png, samples/)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plfw.evaluation.evaluate import Method, Metric, Pair, evaluate, summary_table
from plfw.imaging.visuals import center_crop, grid, save_png
from plfw.storage.checkpoint import atomic_write_bytes


def crop_grid(methods: Mapping[str, Method], pairs: Sequence[Pair], scale: int, path: Path,
              cell: int = 0) -> Path:
    """One row per image: the centre crop of each method's output, then the HR crop."""
    size = 32 * scale
    rows = [[center_crop(m(p.lr), size) for m in methods.values()] + [center_crop(p.hr, size)]
            for p in pairs]
    return save_png(grid(rows, [*methods, "HR"], [p.name for p in pairs], cell=cell), path)


def write_summary(run_dir: Path, methods: Mapping[str, Method], pairs: Sequence[Pair],
                  scale: int, metrics: Mapping[str, Metric],
                  sample_images: int) -> dict[str, Any]:
    """Score each method on ``pairs``; write summary.json, summary.md and summary.png."""
    results = {name: evaluate(m, pairs, scale, metrics=metrics) for name, m in methods.items()}
    summary = {name: {**{k: r[k] for k in metrics}, "per_image": r["per_image"]}
               for name, r in results.items()}
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    atomic_write_bytes(run_dir / "summary.md", summary_table(summary, len(pairs), metrics).encode())
    crop_grid(methods, pairs[:sample_images], scale, run_dir / "summary.png", cell=64 * scale)
    return summary
