"""configs/realesrgan/realesrgan_x4.yaml at smoke size on the shipped photos: both phases train
(degraded_folder data, RRDBNet, U-Net discriminator, L1 + perceptual + GAN + LDL with the EMA)
and a run killed inside the GAN phase resumes to the very same weights; its study file loads."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import REGISTRY

from plfw.core.config import load_config
from plfw.studies.ablation import load_ablation
from plfw.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "realesrgan" / "realesrgan_x4.yaml"


def smoke(run: Path, *extra: str) -> list[str]:
    photos = REPO / "assets" / "photos"
    return [f"data.train.root={photos / 'train'}", f"data.val.root={photos / 'val'}",
            "data.train.crop=32", "data.train.cache=true", "data.batch_size=2",
            "data.workers=0", "data.val_images=1", "generator.num_block=1",
            "generator.num_feat=8", "generator.num_grow_ch=4", "phases.psnr.steps=2",
            "phases.gan.steps=3", "phases.gan.discriminator.channels=8",
            "phases.gan.losses.perceptual.network.weights=none", "metrics=[psnr_y]",
            "train.device=cpu", "train.precision=fp32", "train.log_every=1",
            "train.checkpoint_every=1", "train.keep_last=10", "train.deterministic=true",
            f"run_dir={run}", *extra]


def test_the_realesrgan_recipe_trains_and_resumes_exactly(tmp_path: Path) -> None:
    full = load_config(CONFIG, smoke(tmp_path / "a"))
    Trainer(full, REGISTRY, progress=False).fit()
    part = load_config(CONFIG, smoke(tmp_path / "b"))
    Trainer(part, REGISTRY, progress=False).fit()
    run = tmp_path / "b"
    for step in (4, 5):  # as if killed after step 3, the GAN phase's first update
        (run / "checkpoints" / f"step_{step:08d}.pt").unlink()
    (run / "models" / "gan.pt").unlink()
    Trainer(load_config(CONFIG, smoke(run)), REGISTRY, resume=True, progress=False).fit()
    for phase in ("psnr", "gan"):
        a = torch.load(tmp_path / "a" / "models" / f"{phase}.pt", weights_only=True)
        b = torch.load(run / "models" / f"{phase}.pt", weights_only=True)
        for k, v in a["state_dict"].items():
            assert torch.equal(v, b["state_dict"][k]), (phase, k)
    logged = (run / "metrics.jsonl").read_text()
    assert '"loss_ldl"' in logged and '"loss_d"' in logged


def test_its_study_file_asks_the_loss_network_question() -> None:
    ab = load_ablation(REPO / "configs" / "study" / "loss_networks_realesrgan.yaml")
    assert len(ab.jobs) == 4 * 3 * 3  # arms x adversarial weights x seeds
    perceptual = {j.run: j.config.phases["gan"].losses["perceptual"] for j in ab.jobs}
    assert perceptual["vgg19_relu54"] == {"name": "vgg54", "weight": 1.0}
    assert perceptual["none"] is None and perceptual["convnext"]["network"] == (
        "timm:convnext_tiny")
    assert all(j.config.phases["psnr"].steps == 0 for j in ab.jobs)
