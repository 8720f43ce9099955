"""Judges outside the ImageNet family (plugins/plfw_builtins/metrics/iqa.py, niqe.py): piq's
HaarPSI, GMSD and MS-GMSD as plfw metrics, and plfw's NIQE with its shipped T91 + BSD200 pristine
model."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import piq
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import REPO
from plfw_builtins.metrics import niqe

import plfw
from plfw.cli import main
from plfw.core.errors import UserError
from plfw.imaging.images import list_images, load_image, save_image
from plfw.imaging.imresize import imresize

PHOTOS = REPO / "assets" / "photos"
PIQ = {"haarpsi": piq.haarpsi, "gmsd": piq.gmsd, "ms_gmsd": piq.multi_scale_gmsd}
ALL = (*PIQ, "niqe")


@pytest.fixture(scope="module")
def chelsea() -> dict[str, torch.Tensor]:
    """An HR photo (208x304: 2x3 NIQE patches), a good SR of it (bicubic x2 round trip) and a
    blurred and a noisy SR."""
    hr = load_image(PHOTOS / "val" / "chelsea.png")[:, :208, :304]
    sharp = imresize(imresize(hr, scale=0.5), scale=2).clamp(0, 1)
    noise = torch.randn(sharp.shape, generator=torch.Generator().manual_seed(0))
    return {"hr": hr, "sharp": sharp, "blurred": TF.gaussian_blur(sharp, 9, 2.0),
            "noisy": (sharp + 15 / 255 * noise).clamp(0, 1)}


def reference_input(x: torch.Tensor, border: int = 4) -> torch.Tensor:
    """What piq should see, prepared here independently: 8-bit levels, border cut, NCHW."""
    q = torch.floor(x.double().clamp(0, 1) * 255 + 0.5)
    return q[None, :, border:-border, border:-border] / 255


def test_registered_with_direction_border_and_no_networks() -> None:
    for name, higher in {"haarpsi": True, "gmsd": False, "ms_gmsd": False, "niqe": False}.items():
        metric = plfw.build("metric", name)
        assert (metric.name, metric.higher_is_better, metric.networks, metric.border) == (
            name, higher, (), 4)
        assert plfw.build("metric", {"name": name, "border": 0}).border == 0
        with pytest.raises(UserError, match="border must be >= 0"):
            plfw.build("metric", {"name": name, "border": -1})


@pytest.mark.parametrize("name", PIQ)
def test_piq_metric_equals_piq_function(name: str, chelsea: dict[str, torch.Tensor]) -> None:
    hr, sr = chelsea["hr"], chelsea["sharp"]
    ours = plfw.build("metric", name)(sr, hr)
    theirs = float(PIQ[name](reference_input(sr), reference_input(hr), data_range=1.0))
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    # The same pair on the 0..255 scale: other arithmetic, same measure.
    on_255 = float(PIQ[name](reference_input(sr) * 255, reference_input(hr) * 255,
                             data_range=255))
    assert ours == pytest.approx(on_255, rel=1e-9)
    print(f"{name}: plfw {ours!r} piq {theirs!r} piq(0..255) {on_255!r}")


def test_identical_images_give_the_perfect_value(chelsea: dict[str, torch.Tensor]) -> None:
    hr = chelsea["hr"][:, :151, :203]  # odd sizes
    assert plfw.build("metric", "haarpsi")(hr, hr) == pytest.approx(1.0, abs=1e-12)
    assert plfw.build("metric", "gmsd")(hr, hr) == 0.0
    assert plfw.build("metric", "ms_gmsd")(hr, hr) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_blur_and_noise_score_worse_than_a_sharp_sr(name: str,
                                                    chelsea: dict[str, torch.Tensor]) -> None:
    metric = plfw.build("metric", name)
    sign = 1 if metric.higher_is_better else -1
    scores = {k: sign * metric(chelsea[k], chelsea["hr"]) for k in ("sharp", "blurred", "noisy")}
    assert scores["blurred"] < scores["sharp"] and scores["noisy"] < scores["sharp"], scores
    if name == "niqe":  # no reference: the HR photo itself is the most natural of all
        assert -scores["sharp"] > metric(chelsea["hr"], chelsea["hr"])


def test_niqe_ignores_the_reference(chelsea: dict[str, torch.Tensor]) -> None:
    metric = plfw.build("metric", "niqe")
    assert metric(chelsea["sharp"], chelsea["hr"]) == metric(chelsea["sharp"], chelsea["noisy"])


def test_shipped_niqe_model_loads_with_its_provenance() -> None:
    model = niqe.load_model()
    assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
    assert model.mean.dtype == model.cov.dtype == np.float64
    np.testing.assert_allclose(model.cov, model.cov.T, rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(model.cov).min() > -1e-10
    assert model.info["folders"] == "T91,BSD200" and model.info["images"] == "291"
    assert int(model.info["patches"]) > 1000
    assert "not comparable" in model.info["note"]


def test_shipped_niqe_model_comes_from_t91_and_bsd200(shared_data: Path) -> None:
    """The digest in the file is that of the 291 training images (cheap; the refit is slow)."""
    paths = [p for d in ("T91", "BSD200") for p in list_images(shared_data / "train" / d)]
    assert len(paths) == 291
    assert niqe.files_digest(paths) == niqe.load_model().info["files_sha256"]


def load_fit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_niqe", REPO / "scripts" / "fit_niqe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fit_script_reproduces_the_shipped_model(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "refit.npz"
    assert load_fit_script().main(["--out", str(out)]) == 0
    refit, shipped = niqe.load_model(out), niqe.load_model()
    np.testing.assert_allclose(refit.mean, shipped.mean, rtol=1e-10)
    np.testing.assert_allclose(refit.cov, shipped.cov, rtol=1e-8, atol=1e-14)
    assert refit.info == shipped.info


def test_a_model_fitted_on_other_photos_is_used_by_the_metric(
        tmp_path: Path, chelsea: dict[str, torch.Tensor],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "photos.npz"
    assert load_fit_script().main([str(PHOTOS / "val"), "--out", str(out)]) == 0
    assert "patches from 3 of 3 images" in capsys.readouterr().out
    own = plfw.build("metric", {"name": "niqe", "model": str(out)})
    assert own.model.info["folders"] == "val"
    value = own(chelsea["sharp"], chelsea["hr"])
    assert math.isfinite(value) and value != plfw.build("metric", "niqe")(chelsea["sharp"], None)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    for path, message in ((tmp_path / "bad.npz", "cannot read a NIQE model"),
                          (tmp_path / "none.npz", "cannot read a NIQE model")):
        with pytest.raises(UserError, match=message) as err:
            plfw.build("metric", {"name": "niqe", "model": str(path)})
        assert "\n" not in str(err.value)
    np.savez(tmp_path / "short.npz", mean=np.zeros(18), cov=np.eye(18))
    with pytest.raises(UserError, match=r"expected mean \(36,\)"):
        plfw.build("metric", {"name": "niqe", "model": str(tmp_path / "short.npz")})


def test_grayscale_and_odd_sizes(chelsea: dict[str, torch.Tensor]) -> None:
    hr = chelsea["hr"].mean(0, keepdim=True)[:, :207, :213]
    sr = chelsea["blurred"].mean(0, keepdim=True)[:, :207, :213]
    for name, fn in PIQ.items():
        value = plfw.build("metric", name)(sr, hr)
        assert value == pytest.approx(float(fn(reference_input(sr), reference_input(hr))),
                                      rel=1e-12, abs=1e-15)
    grey = plfw.build("metric", "niqe")(sr, hr)
    rgb = plfw.build("metric", "niqe")(chelsea["blurred"][:, :207, :213], hr)
    assert math.isfinite(grey) and grey == pytest.approx(rgb, rel=0.1)  # similar luma
    with pytest.raises(UserError, match="at least 96 pixels"):
        plfw.build("metric", "niqe")(sr[:, :100, :100], hr[:, :100, :100])
    with pytest.raises(UserError, match="at least 16 pixels"):
        plfw.build("metric", "haarpsi")(sr[:, :20, :20], hr[:, :20, :20])


def test_eval_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from plfw.evaluation.evaluate import bicubic, load_pairs

    hr_dir, sr_dir = tmp_path / "HR", tmp_path / "SR"
    hr_dir.mkdir()
    sr_dir.mkdir()
    for name in ("camera", "grass"):
        photo = load_image(PHOTOS / "val" / f"{name}.png")[:, :200, :204]  # 2x2 NIQE patches
        save_image(photo, hr_dir / f"{name}.png")
    for pair in load_pairs(hr_dir, None, 4):
        save_image(bicubic(4)(pair.lr), sr_dir / f"{pair.name}_x4.png")
    code = main(["eval", "--sr", str(sr_dir), "--hr", str(hr_dir), "--metrics",
                 "haarpsi,gmsd,niqe", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["higher_is_better"] == {"haarpsi": True, "gmsd": False, "niqe": False}
    for row in out["per_image"]:
        sr = load_image(sr_dir / f"{row['name']}_x4.png")
        hr = load_image(hr_dir / f"{row['name']}.png")
        for key in ("haarpsi", "gmsd", "niqe"):
            assert row[key] == pytest.approx(plfw.build("metric", key)(sr, hr), rel=1e-12)
    assert 0.5 < out["haarpsi"] < 1 and 0 < out["gmsd"] < 0.3 and 3 < out["niqe"] < 20


def test_missing_piq_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "piq", None)  # `import piq` now fails, as when absent
    with pytest.raises(UserError, match=r"needs the piq package: pip install piq"):
        plfw.build("metric", "haarpsi")
    assert plfw.build("metric", "niqe").name == "niqe"  # NIQE is plfw's own
    hr = tmp_path / "HR"
    hr.mkdir()
    save_image(load_image(PHOTOS / "val" / "grass.png"), hr / "grass.png")
    code = main(["eval", "--model", "bicubic", "--hr", str(hr), "--metrics", "psnr_y,haarpsi"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install piq" in err
