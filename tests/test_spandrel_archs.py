"""Generators from spandrel's architecture classes by name (``spandrel:<id>``): they train
through ``plfw train``, export and reload through their spec, upscale, and bad names or options
are one-line errors. Skipped without the optional spandrel package."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

pytest.importorskip("spandrel")

from plfw.cli import main  # noqa: E402
from plfw.core.errors import UserError  # noqa: E402
from plfw.inference.generators import open_generator  # noqa: E402

COMPACT = "generator={name: 'spandrel:Compact', options: {num_feat: 8, num_conv: 2}}"


def test_a_spandrel_architecture_trains_exports_reloads_and_upscales(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path, gan=False)
    assert main(["train", str(config), COMPACT, "--quiet"]) == 0
    model = tmp_path / "run" / "models" / "srresnet.pt"
    loaded = open_generator(model, REGISTRY)
    assert loaded.spec["name"] == "spandrel:Compact" and loaded.module.architecture == "Compact"
    lr = torch.rand(1, 3, 12, 10)
    sr = loaded.module(lr)
    assert sr.shape == (1, 3, 48, 40)
    out = tmp_path / "m.safetensors"
    assert main(["export", str(model), "--format", "safetensors", "--out", str(out)]) == 0
    again = open_generator(out, REGISTRY)
    torch.testing.assert_close(again.module(lr), sr)
    photo = next((Path(__file__).resolve().parents[1] / "assets" / "photos" / "val").iterdir())
    assert main(["upscale", str(photo), "--model", str(out), "--out", str(tmp_path / "up"),
                 "--quiet", "--precision", "fp32"]) == 0
    assert (tmp_path / "up" / f"{photo.stem}_x4.png").is_file()


def test_every_architecture_name_resolves_and_mistakes_are_one_line() -> None:
    from plfw_builtins.generators.spandrel_archs import architectures, model_class

    names = architectures()
    assert {"SPAN", "Compact", "SwinIR", "ESRGAN"} <= set(names)
    assert issubclass(model_class("SPAN"), torch.nn.Module)
    with pytest.raises(UserError, match="unknown architecture 'SPAM' .*SPAN"):
        REGISTRY.build("generator", "spandrel:SPAM")
    with pytest.raises(UserError, match="unknown option 'num_fet' .*num_feat"):
        REGISTRY.build("generator", {"name": "spandrel:Compact", "options": {"num_fet": 8}})
