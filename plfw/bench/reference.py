"""The plain SRGAN training step ``plfw bench`` times plfw's own step against.

Written the way a tutorial writes it, on purpose: straightforward eager PyTorch in fp32 and
NCHW, no fusion, no compilation, no channels-last, two separate VGG passes (SR and HR), and a
second discriminator pass on the detached SR batch. The maths is the paper's (Ledig et al.,
CVPR 2017): SRResNet with B = 16 residual blocks, batch norm and PReLU; the 8-convolution
discriminator with LeakyReLU 0.2 and two dense layers; VGG19 relu5_4 content loss scaled by
1/12.75; 1e-3 x the adversarial loss; Adam. Weights are random: timing does not depend on
them, and nothing is downloaded.

``build(batch, hr, mse_only)`` returns a zero-argument function that runs one step on a fixed
synthetic batch (any module with such a ``build`` can be passed as ``plfw bench --reference``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class Residual(nn.Module):
    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class Generator(nn.Module):
    """SRResNet x4: 9x9 head, 16 residual blocks, a long skip, two x2 sub-pixel stages."""

    def __init__(self, blocks: int = 16, channels: int = 64) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 9, padding=4)
        self.head_act = nn.PReLU()
        self.blocks = nn.ModuleList(Residual(channels) for _ in range(blocks))
        self.trunk_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.trunk_bn = nn.BatchNorm2d(channels)
        self.up1 = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.up1_act = nn.PReLU()
        self.up2 = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.up2_act = nn.PReLU()
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        head = self.head_act(self.head(lr))
        x = head
        for block in self.blocks:
            x = block(x)
        x = head + self.trunk_bn(self.trunk_conv(x))
        x = self.up1_act(F.pixel_shuffle(self.up1(x), 2))
        x = self.up2_act(F.pixel_shuffle(self.up2(x), 2))
        return torch.tanh(self.tail(x))


class Discriminator(nn.Module):
    """Eight 3x3 convolutions (64 -> 512 channels, stride 2 every second one), LeakyReLU 0.2,
    batch norm after all but the first, then dense 1024 and dense 1 (a logit)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels_in = 3
        for i, channels in enumerate((64, 64, 128, 128, 256, 256, 512, 512)):
            layers.append(nn.Conv2d(channels_in, channels, 3, stride=1 + i % 2, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.LeakyReLU(0.2))
            channels_in = channels
        self.features = nn.Sequential(*layers)
        side = size // 16
        self.dense1 = nn.Linear(512 * side * side, 1024)
        self.dense2 = nn.Linear(1024, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return self.dense2(F.leaky_relu(self.dense1(x), 0.2))


def build(batch: int = 16, hr: int = 96, mse_only: bool = False) -> Callable[[], None]:
    """One SRGAN step (``mse_only``: one SRResNet-MSE step) on a fixed random batch."""
    generator = Generator()
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4)
    lr_batch = torch.rand(batch, 3, hr // 4, hr // 4)
    hr_batch = torch.rand(batch, 3, hr, hr) * 2 - 1  # the generator's [-1, 1] range
    if mse_only:
        def mse_step() -> None:
            opt_g.zero_grad()
            F.mse_loss(generator(lr_batch), hr_batch).backward()
            opt_g.step()

        return mse_step

    vgg = torchvision.models.vgg19(weights=None).features[:36].eval()  # up to relu5_4
    for p in vgg.parameters():
        p.requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    discriminator = Discriminator(hr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-4)
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def features(x: torch.Tensor) -> torch.Tensor:
        return vgg(((x + 1) / 2 - mean) / std) / 12.75

    def srgan_step() -> None:
        sr = generator(lr_batch)
        opt_d.zero_grad()
        d_loss = (F.binary_cross_entropy_with_logits(discriminator(hr_batch), ones)
                  + F.binary_cross_entropy_with_logits(discriminator(sr.detach()), zeros))
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        content = F.mse_loss(features(sr), features(hr_batch))
        adversarial = F.binary_cross_entropy_with_logits(discriminator(sr), ones)
        (content + 1e-3 * adversarial).backward()
        opt_g.step()

    return srgan_step
