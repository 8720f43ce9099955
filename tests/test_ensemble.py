"""Geometric self-ensemble: exactly equivariant, a no-op on equivariant methods, and the same
through the CLI's tiles as on the whole image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REGISTRY
from PIL import Image
from plfw_builtins.generators.srresnet import SRResNet

from plfw.evaluation.evaluate import bicubic
from plfw.imaging.images import load_image
from plfw.inference.ensemble import DIHEDRAL, dihedral_mean, self_ensemble, transform, untransform
from plfw.inference.generators import load_generator, to_unit

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "assets" / "photos" / "val" / "chelsea.png"


def _tiny_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return SRResNet(scale=2, blocks=1, channels=8).eval()


def test_the_eight_symmetries_are_distinct_and_undone() -> None:
    x = torch.arange(12.0).reshape(1, 3, 4)
    images = [transform(x, i) for i in range(len(DIHEDRAL))]
    assert len({tuple(t.flatten().tolist()) for t in images}) == 8
    for i, t in enumerate(images):
        assert torch.equal(untransform(t, i), x)


def test_ensemble_of_a_network_is_equivariant_and_the_network_is_not() -> None:
    net = _tiny_generator()
    lr = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        plain, ensembled = net, self_ensemble(net)
        for i in range(1, len(DIHEDRAL)):
            moved = transform(lr, i).contiguous()
            assert not torch.allclose(plain(moved), transform(plain(lr), i), atol=1e-4)
            assert torch.allclose(ensembled(moved), transform(ensembled(lr), i), atol=1e-5)


def test_an_equivariant_method_is_unchanged_and_one_pass_is_the_method() -> None:
    lr = load_image(PHOTO)[:, 40:72, 60:92]
    method = bicubic(4)
    assert torch.allclose(self_ensemble(method)(lr), method(lr), atol=1e-6)
    calls = []
    out = dihedral_mean(lambda t, i: calls.append(i) or t * 2, lr, passes=1)
    assert calls == [0] and torch.equal(out, lr * 2)
    with pytest.raises(ValueError, match="passes"):
        dihedral_mean(lambda t, i: t, lr, passes=9)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plfw", *args], capture_output=True, text=True)


def test_cli_upscale_and_eval_self_ensemble(tmp_path: Path) -> None:
    crop = tmp_path / "hr" / "cat.png"
    crop.parent.mkdir()
    Image.open(PHOTO).convert("RGB").crop((150, 60, 198, 108)).save(crop)
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    Image.open(crop).resize((12, 12), Image.BICUBIC).save(lr_dir / "cat.png")
    base = ["upscale", str(lr_dir / "cat.png"), "--model", "srresnet", "--quiet",
            "--device", "cpu", "--precision", "fp32", "--tile", "5", "--overlap", "32"]
    done = _run(*base, "--out", str(tmp_path / "ens"), "--self-ensemble")
    assert done.returncode == 0, done.stderr
    module, out_range = load_generator("srresnet", REGISTRY)
    lr = load_image(lr_dir / "cat.png")[None]
    with torch.no_grad():
        whole = self_ensemble(lambda x: to_unit(module.eval()(x), out_range))(lr)[0]
    tiled = load_image(tmp_path / "ens" / "cat_x4.png")
    assert (tiled - whole.clamp(0, 1)).abs().max() <= 1.01 / 255

    scores = {}
    for extra in ([], ["--self-ensemble"]):
        done = _run("eval", "--model", "srresnet", "--hr", str(crop.parent), "--lr", str(lr_dir),
                    "--scale", "4", "--json", *extra)
        assert done.returncode == 0, done.stderr
        scores[bool(extra)] = json.loads(done.stdout)["psnr_y"]
    assert scores[True] != scores[False]
