"""MATLAB-compatible bicubic resize: against a naive per-pixel loop and MATLAB-made LR files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plfw.imaging.imresize import bicubic_downscale_uint8, imresize


def naive_resize(img: np.ndarray, out_h: int, out_w: int, sh: float, sw: float) -> np.ndarray:
    """MATLAB's imresize written out per output pixel (2-D sum; the passes are linear and
    separable, so for float images their order does not matter)."""

    def cubic(t: float) -> float:
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t < 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    def taps(out_i: int, n: int, s: float) -> list[tuple[int, float]]:
        width = 4 / s if s < 1 else 4
        u = (out_i + 1) / s + 0.5 * (1 - 1 / s)
        left = math.floor(u - width / 2)
        pairs = []
        for k in range(math.ceil(width) + 2):
            j = left + k
            w = s * cubic(s * (u - j)) if s < 1 else cubic(u - j)
            m = (j - 1) % (2 * n)  # mirror: 1..n, n..1, ...
            pairs.append((m if m < n else 2 * n - 1 - m, w))
        total = sum(w for _, w in pairs)
        return [(j, w / total) for j, w in pairs]

    c, h, w = img.shape
    out = np.zeros((c, out_h, out_w))
    for y in range(out_h):
        for x in range(out_w):
            for jy, wy in taps(y, h, sh):
                for jx, wx in taps(x, w, sw):
                    out[:, y, x] += wy * wx * img[:, jy, jx]
    return out


@pytest.mark.parametrize(("scale", "size"), [
    (2.0, None), (3.0, None), (0.5, None), (1 / 3, None), (None, (5, 13)), (None, (17, 4)),
])
def test_matches_naive_loop(scale: float | None, size: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((2, 9, 7))
    out = imresize(torch.from_numpy(img), scale=scale, size=size).numpy()
    oh, ow = size or (math.ceil(9 * scale), math.ceil(7 * scale))
    sh, sw = (scale, scale) if scale else (oh / 9, ow / 7)
    assert out.shape == (2, oh, ow)
    np.testing.assert_allclose(out, naive_resize(img, oh, ow, sh, sw), atol=1e-12)


def test_batch_and_float32() -> None:
    x = torch.rand(2, 3, 12, 10)
    y = imresize(x, scale=0.5)
    assert y.shape == (2, 3, 6, 5) and y.dtype == torch.float32
    assert torch.allclose(y[1], imresize(x[1], scale=0.5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [4.0, 0.25, 1.5])
def test_constant_image_stays_constant(scale: float) -> None:
    x = torch.full((3, 16, 12), 0.37, dtype=torch.float64)
    y = imresize(x, scale=scale)
    assert torch.allclose(y, torch.full_like(y, 0.37), rtol=0, atol=1e-12)


def test_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), scale=2)
    with pytest.raises(ValueError):
        imresize(torch.zeros(3, 8, 8), scale=2, size=(16, 16))
    with pytest.raises(ValueError, match="multiply by 255"):
        bicubic_downscale_uint8(torch.rand(3, 16, 16), 4)


def test_downscale_uint8_dtype_and_float_input() -> None:
    img = torch.randint(0, 256, (3, 20, 16), dtype=torch.uint8)
    lr = bicubic_downscale_uint8(img, 4)
    assert lr.dtype == torch.uint8 and lr.shape == (3, 5, 4)
    assert torch.equal(lr, bicubic_downscale_uint8(img.float(), 4))
    assert torch.equal(lr, bicubic_downscale_uint8(img.double() / 255 * 255, 4))


def _load_chw_uint8(path: Path) -> torch.Tensor:
    a = torch.from_numpy(np.array(Image.open(path)))
    return a[None] if a.dim() == 2 else a.permute(2, 0, 1)


@pytest.mark.parametrize("bench", ["Set5", "Set14"])
def test_reproduces_matlab_lr_files(shared_data: Path, bench: str) -> None:
    """At least 99.9% of interior LR pixels (1-pixel border excluded) equal the MATLAB files;
    Set14 includes the grayscale (mode L) bridge."""
    root = shared_data / "benchmarks" / bench
    same = total = 0
    for hr_path in sorted((root / "HR").glob("*.png")):
        ours = bicubic_downscale_uint8(_load_chw_uint8(hr_path), 4)
        ref = _load_chw_uint8(root / "LR_bicubic" / "X4" / hr_path.name)
        assert ours.shape == ref.shape, hr_path.name
        inner = (ours == ref)[:, 1:-1, 1:-1]
        same, total = same + int(inner.sum()), total + inner.numel()
    assert same / total >= 0.999, f"{bench}: {same / total:.5f} of interior pixels match"
