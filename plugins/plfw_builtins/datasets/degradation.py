"""``degraded_folder``: LR made on the fly by a random second-order degradation, for blind SR.

The model of the degradation is Real-ESRGAN's (Wang et al., ICCVW 2021, section 3): the HR
crop goes through blur -> resize -> noise -> JPEG twice, then a final resize to the LR size
with a sinc filter and JPEG in random order. Every choice is drawn per item:

- blur: a kernel of odd size in ``kernel_range``; with ``sinc_prob`` a 2-D sinc (circular
  low-pass, cut-off in [pi/3, pi] below size 13, [pi/5, pi] from 13), else one of isotropic /
  anisotropic Gaussian, generalised Gaussian ``exp(-(x' S^-1 x / 2)^beta)`` (beta in
  ``betag_range``) and plateau ``1 / (1 + (x' S^-1 x)^beta)`` (beta in ``betap_range``), with the
  probabilities ``kernel_probs`` (iso, aniso, gen. iso, gen. aniso, plateau iso, plateau aniso);
  sigmas in ``sigma_range``, rotation uniform;
- resize: up / down / keep with ``resize_probs``, factor uniform in ``resize_range`` (up: above
  1, down: below 1), by area, bilinear or bicubic interpolation (equally likely);
- noise: Gaussian with ``gaussian_noise_prob`` (sigma in ``noise_range`` on the 0-255 scale),
  else Poisson (``poisson_scale_range``); in either case the same noise for all three channels
  (gray noise) with ``gray_noise_prob``;
- JPEG at a quality in ``jpeg_range`` (Pillow's encoder, a real 8-bit round trip).

The second stage has its own ranges (``*2`` params) and runs its blur with
``second_blur_prob``; the final sinc runs with ``final_sinc_prob``. The defaults are the
Real-ESRGAN paper's x4 settings. LR is rounded to 8 bits, like a saved image.

Randomness comes from torch's global generator and Python's ``random``, which plfw's batch
sampler seeds per item from (run seed, step): a resumed run degrades every item exactly as an
uninterrupted one would. Cost: ``plfw bench`` times the loader with the config's dataset
(``--loader FOLDER --workers N``) against the step's consumption.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import special

import plfw
from plfw import UserError
from plfw_builtins.datasets.folders import HRFolder, HRFolderParams

KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
           "plateau_aniso")
MODES = ("area", "bilinear", "bicubic")


@dataclass
class DegradationParams(HRFolderParams):
    """An HR image folder whose LR is a random second-order degradation of each HR crop
    (Real-ESRGAN's model); the defaults are its x4 settings."""

    crop: int | None = 256
    kernel_range: list[int] = field(default_factory=lambda: [7, 21])
    kernel_probs: list[float] = field(default_factory=lambda: [0.45, 0.25, 0.12, 0.03, 0.12,
                                                                0.03])
    sinc_prob: float = 0.1
    sigma_range: list[float] = field(default_factory=lambda: [0.2, 3.0])
    betag_range: list[float] = field(default_factory=lambda: [0.5, 4.0])
    betap_range: list[float] = field(default_factory=lambda: [1.0, 2.0])
    resize_probs: list[float] = field(default_factory=lambda: [0.2, 0.7, 0.1])
    resize_range: list[float] = field(default_factory=lambda: [0.15, 1.5])
    gaussian_noise_prob: float = 0.5
    noise_range: list[float] = field(default_factory=lambda: [1.0, 30.0])
    poisson_scale_range: list[float] = field(default_factory=lambda: [0.05, 3.0])
    gray_noise_prob: float = 0.4
    jpeg_range: list[float] = field(default_factory=lambda: [30.0, 95.0])
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    sigma_range2: list[float] = field(default_factory=lambda: [0.2, 1.5])
    resize_probs2: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.3])
    resize_range2: list[float] = field(default_factory=lambda: [0.3, 1.2])
    gaussian_noise_prob2: float = 0.5
    noise_range2: list[float] = field(default_factory=lambda: [1.0, 25.0])
    poisson_scale_range2: list[float] = field(default_factory=lambda: [0.05, 2.5])
    gray_noise_prob2: float = 0.4
    jpeg_range2: list[float] = field(default_factory=lambda: [30.0, 95.0])
    final_sinc_prob: float = 0.8


def _uniform(bounds: list[float]) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(torch.rand(()))


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.meshgrid(r, r, indexing="ij")


def sinc_kernel(cutoff: float, size: int) -> torch.Tensor:
    """2-D circular low-pass kernel with cut-off ``cutoff`` (radians per pixel), normalised."""
    y, x = _grid(size)
    r = torch.sqrt(x * x + y * y)
    scaled = (cutoff * r).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(scaled) / (2 * math.pi * r.numpy())
    k[r.numpy() == 0] = cutoff**2 / (4 * math.pi)
    k = torch.from_numpy(k)
    return (k / k.sum()).float()


def shaped_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float,
                  beta: float = 1.0) -> torch.Tensor:
    """Gaussian, generalised Gaussian or plateau kernel with covariance diag(sx^2, sy^2)
    rotated by ``theta``, normalised to sum 1."""
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(cov)
    y, x = _grid(size)
    d = torch.stack([x, y], -1)
    q = torch.einsum("...i,ij,...j->...", d, inv, d)  # x' S^-1 x
    if kind.startswith("plateau"):
        k = 1 / (1 + q**beta)
    else:
        k = torch.exp(-0.5 * q**(beta if kind.startswith("generalized") else 1.0))
    return (k / k.sum()).float()


def random_kernel(p: DegradationParams, sinc_prob: float, sigmas: list[float]) -> torch.Tensor:
    """One blur kernel as the degradation model draws it."""
    lo, hi = p.kernel_range
    size = 2 * int(torch.randint(lo // 2, hi // 2 + 1, ())) + 1
    if float(torch.rand(())) < sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(low + (math.pi - low) * float(torch.rand(())), size)
    kind = random.choices(KERNELS, weights=p.kernel_probs)[0]
    sx = _uniform(sigmas)
    sy, theta = (sx, 0.0) if kind.endswith("iso") and not kind.endswith("aniso") else (
        _uniform(sigmas), math.pi * (2 * float(torch.rand(())) - 1))
    beta = (_uniform(p.betag_range) if kind.startswith("generalized")
            else _uniform(p.betap_range) if kind.startswith("plateau") else 1.0)
    return shaped_kernel(kind, size, sx, sy, theta, beta)


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel of a CHW image with ``kernel`` (reflected borders; repeated
    edge pixels where the image is smaller than the kernel, as after a strong downscale of a
    small crop)."""
    pad = kernel.shape[-1] // 2
    mode = "reflect" if pad < min(img.shape[-2:]) else "replicate"
    x = F.pad(img[None], (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(img.dtype)[None, None].expand(img.shape[0], 1, -1, -1)
    return F.conv2d(x, weight, groups=img.shape[0])[0]


def resize(img: torch.Tensor, size: tuple[int, int], mode: str | None = None) -> torch.Tensor:
    mode = mode or random.choice(MODES)
    size = (max(1, size[0]), max(1, size[1]))
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(img[None], size=size, mode=mode, **kwargs)[0]


def random_resize(img: torch.Tensor, probs: list[float], bounds: list[float],
                  base: tuple[int, int] | None = None) -> torch.Tensor:
    """Up (factor in (1, hi]), down ([lo, 1)) or keep, relative to ``base`` (default: the
    image's own size)."""
    way = random.choices(("up", "down", "keep"), weights=probs)[0]
    lo, hi = bounds
    factor = (1 + (hi - 1) * float(torch.rand(())) if way == "up" else
              lo + (1 - lo) * float(torch.rand(())) if way == "down" else 1.0)
    h, w = base or img.shape[-2:]
    return resize(img, (round(h * factor), round(w * factor)))


def add_noise(img: torch.Tensor, gaussian_prob: float, sigmas: list[float],
              poisson_scales: list[float], gray_prob: float) -> torch.Tensor:
    """Gaussian (sigma on the 0-255 scale) or Poisson noise, gray with ``gray_prob``."""
    gray = float(torch.rand(())) < gray_prob
    if float(torch.rand(())) < gaussian_prob:
        shape = (1, *img.shape[1:]) if gray else img.shape
        noise = torch.randn(shape) * (_uniform(sigmas) / 255)
    else:
        base = img.mean(0, keepdim=True) if gray else img
        counts = base.clamp(0, 1) * 255
        noise = (torch.poisson(counts) - counts) / 255 * _uniform(poisson_scales)
    return (img + noise).clamp(0, 1)


def jpeg(img: torch.Tensor, quality: float) -> torch.Tensor:
    """A real JPEG round trip through Pillow at ``quality``."""
    array = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=int(round(quality)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def degrade(hr: torch.Tensor, scale: int, p: DegradationParams) -> torch.Tensor:
    """HR (CHW float in [0, 1]) -> LR of ``hr.shape / scale`` by the second-order model."""
    h, w = hr.shape[-2:]
    x = blur(hr, random_kernel(p, p.sinc_prob, p.sigma_range))
    x = random_resize(x, p.resize_probs, p.resize_range)
    x = add_noise(x, p.gaussian_noise_prob, p.noise_range, p.poisson_scale_range,
                  p.gray_noise_prob)
    x = jpeg(x, _uniform(p.jpeg_range))
    if float(torch.rand(())) < p.second_blur_prob:
        x = blur(x, random_kernel(p, p.sinc_prob2, p.sigma_range2))
    x = random_resize(x, p.resize_probs2, p.resize_range2, base=(h // scale, w // scale))
    x = add_noise(x, p.gaussian_noise_prob2, p.noise_range2, p.poisson_scale_range2,
                  p.gray_noise_prob2)
    final = (random_kernel(p, 1.0, p.sigma_range2)
             if float(torch.rand(())) < p.final_sinc_prob else None)

    def to_lr(y: torch.Tensor) -> torch.Tensor:
        y = resize(y, (h // scale, w // scale))
        return blur(y, final) if final is not None else y

    quality = _uniform(p.jpeg_range2)
    if float(torch.rand(())) < 0.5:  # resize + sinc, then JPEG; or the other way round
        x = jpeg(to_lr(x), quality)
    else:
        x = to_lr(jpeg(x, quality))
    return (x.clamp(0, 1) * 255).round() / 255


class DegradedFolder(HRFolder):
    """HR crops and their randomly degraded LR (see the module docstring)."""

    name = "degraded_folder"

    def __init__(self, p: DegradationParams) -> None:
        _check(p)
        super().__init__(p)
        self.params = p

    def _sample(self, imgs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        hr = self.hr_crop(imgs)
        lr = degrade(hr.float() / 255, self.scale, self.params)
        return (lr * 255).round().to(torch.uint8), hr


def _check(p: DegradationParams) -> None:
    where = "dataset 'degraded_folder'"
    if not p.crop or p.crop < 4 * p.scale:
        raise UserError(f"{where}: crop must be at least 4 x scale ({4 * p.scale}), got "
                        f"{p.crop}; the degradation needs real HR crops")
    lo, hi = p.kernel_range
    if not 1 <= lo <= hi or lo % 2 == 0 or hi % 2 == 0:
        raise UserError(f"{where}: kernel_range must be two odd sizes, low <= high, got "
                        f"{p.kernel_range}")
    for name in ("kernel_probs", "resize_probs", "resize_probs2"):
        probs = getattr(p, name)
        expected = len(KERNELS) if name == "kernel_probs" else 3
        if len(probs) != expected or min(probs) < 0 or sum(probs) <= 0:
            raise UserError(f"{where}: {name} must be {expected} non-negative weights, got "
                            f"{probs}")
    for name, value in vars(p).items():
        if name.endswith("_range") or name.endswith("_range2"):
            if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                raise UserError(f"{where}: {name} must be [low, high] with 0 <= low <= high, "
                                f"got {value}")


@plfw.hookimpl
def plfw_register_datasets(register: plfw.Register) -> None:
    register("degraded_folder", DegradedFolder, DegradationParams,
             "HR folder with LR by Real-ESRGAN's random second-order degradation (blind SR)")
