"""Fit plfw's NIQE pristine model on HR training images and write it as an .npz.

    python scripts/fit_niqe.py                      # T91 + BSD200 from ../shared/data/train
    python scripts/fit_niqe.py DIR... --out my.npz  # any folders; use with {name: niqe, model: ...}

The default writes ``plfw/data/niqe_t91_bsd200.npz``, the model the ``niqe`` metric ships with:
the feature mean (36,) and covariance (36, 36) of the sharp 96x96 patches (both scales) of the
291 HR images, and, as provenance, the folders, image and patch counts and a SHA-256 over the image
files (the images themselves are not shipped). See ``plugins/plfw_builtins/metrics/niqe.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from plfw_builtins.metrics import niqe

from plfw import UserError, list_images, load_image_uint8

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "train"
DEFAULT_DIRS = [TRAIN / "T91", TRAIN / "BSD200"]
DEFAULT_OUT = REPO / "plfw" / "data" / "niqe_t91_bsd200.npz"


def fit_folders(folders: list[Path], threshold: float = niqe.SHARPNESS) -> niqe.PristineModel:
    """The pristine model of every image in ``folders`` (sorted per folder)."""
    paths = [p for f in folders for p in list_images(f)]
    if not paths:
        raise UserError(f"no images in {', '.join(map(str, folders))}")

    def images() -> Iterator[torch.Tensor]:
        for p in paths:
            yield load_image_uint8(p).to(torch.float64) / 255

    mean, cov, used, patches = niqe.fit(images(), threshold)
    info = {
        "folders": ",".join(f.name for f in folders),
        "images": str(len(paths)),
        "images_with_patches": str(used),
        "patches": str(patches),
        "sharpness_threshold": str(threshold),
        "files_sha256": niqe.files_digest(paths),
        "note": "plfw NIQE pristine model; not comparable to published NIQE values",
    }
    return niqe.PristineModel(mean, cov, info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path, default=DEFAULT_DIRS,
                    help="folders of pristine (sharp, clean) images; default T91 and BSD200")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .npz to write")
    ap.add_argument("--threshold", type=float, default=niqe.SHARPNESS,
                    help="keep patches at least this sharp relative to the image's sharpest")
    args = ap.parse_args(argv)
    try:
        start = time.perf_counter()
        model = fit_folders(args.folders, args.threshold)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"{args.out}: {model.info['patches']} patches from {model.info['images_with_patches']} "
          f"of {model.info['images']} images in {time.perf_counter() - start:.1f} s; "
          f"mean[:4] {np.round(model.mean[:4], 4).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
