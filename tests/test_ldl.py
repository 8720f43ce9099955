"""The ``ldl`` loss (Liang et al., CVPR 2022) against its definition worked out in numpy, its
use of the EMA generator, and its place in training (train.ema required)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import REGISTRY, tiny_config
from plfw_builtins.losses.ldl import artefact_map

from plfw.cli import main


def numpy_map(sr: np.ndarray, hr: np.ndarray, ema: np.ndarray, k: int) -> np.ndarray:
    """The artefact map of one image (C, H, W), by explicit windows."""
    r = np.abs(hr - sr).sum(0)
    r_ema = np.abs(hr - ema).sum(0)
    padded = np.pad(r, k // 2, mode="reflect")
    h, w = r.shape
    local = np.array([[padded[y:y + k, x:x + k].var(ddof=1) for x in range(w)]
                      for y in range(h)])
    weight = r.var(ddof=1) ** 0.2 * local
    return np.where(r >= r_ema, weight, 0.0)


def test_artefact_map_matches_the_papers_definition() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, 12, 10, generator=g, dtype=torch.float64)
    sr = (hr + 0.1 * torch.randn(1, 3, 12, 10, generator=g, dtype=torch.float64)).clamp(0, 1)
    ema = (hr + 0.1 * torch.randn(1, 3, 12, 10, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = artefact_map(sr, hr, ema, 7)[0, 0].numpy()
    np.testing.assert_allclose(ours, numpy_map(sr[0].numpy(), hr[0].numpy(), ema[0].numpy(), 7),
                               rtol=1e-9, atol=1e-12)
    assert 0 < (ours > 0).mean() < 1  # some pixels are the EMA's fault, some the generator's


def test_the_loss_pulls_only_where_the_generator_is_worse_than_its_ema() -> None:
    loss = REGISTRY.build("loss", "ldl")
    loss.set_image_range(-1.0, 1.0)
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 16, 16) * 2 - 1
    sr = (hr + 0.3 * torch.randn_like(hr)).clamp(-1, 1).requires_grad_(True)
    worse_ema = (hr + 0.9 * torch.randn_like(hr)).clamp(-1, 1)
    with torch.no_grad():
        assert float(loss(sr, hr, ema_sr=worse_ema)) < float(loss(sr, hr, ema_sr=hr))
    value = loss(sr, hr, ema_sr=hr)  # a perfect EMA: every residual of SR counts
    value.backward()
    assert value > 0 and sr.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="EMA"):
        loss(sr, hr)


def test_ldl_trains_with_an_ema_and_is_refused_without(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["phases"]["srgan"]["losses"]["ldl"] = {"name": "ldl", "weight": 1.0}
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config), "train.ema=0", "--quiet"]) == 2
    assert "phases.srgan.losses.ldl compares with the EMA generator: set train.ema" in (
        capsys.readouterr().err)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the first step
    assert main(["train", str(config), "train.ema=0.9", "--quiet"]) == 0
    logs = [yaml.safe_load(line) for line in
            (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_ldl" in r and r["loss_ldl"] >= 0 for r in logs)
