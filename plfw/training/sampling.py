"""Training batches that depend only on (seed, step), so a resumed run replays exactly what an
uninterrupted one sees, whatever the number of loader workers or processes."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator
from typing import Any

import torch


class StepBatches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batches that depend only on (seed, step): resuming at step s replays exactly what an
    uninterrupted run would have seen, whatever the number of workers. Each item carries its
    own seed for crops and flips. In distributed runs each rank takes its slice of one global
    batch, so N processes see the same images as one process with an N times larger batch."""

    def __init__(self, size: int, batch: int, seed: int, start: int, rank: int = 0,
                 world: int = 1) -> None:
        self.size, self.batch, self.seed, self.start = size, batch, seed, start
        self.rank, self.world = rank, world

    def for_step(self, step: int) -> list[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        total = self.batch * self.world
        reps = math.ceil(total / self.size)
        order = torch.cat([torch.randperm(self.size, generator=g) for _ in range(reps)])[:total]
        seeds = torch.randint(0, 2**62, (total,), generator=g)
        items = list(zip(order.tolist(), seeds.tolist(), strict=True))
        return items[self.rank * self.batch: (self.rank + 1) * self.batch]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            yield self.for_step(step)
            step += 1

    def __len__(self) -> int:  # an endless stream; DataLoader only needs a number
        return sys.maxsize


class SeededItems(torch.utils.data.Dataset):
    """Serves ``dataset[index]`` with torch's and Python's RNG seeded per item."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            item = self.dataset[index]
        random.setstate(state)
        return item


def step_loader(dataset: Any, batch: int, seed: int, start: int, workers: int = 0,
                rank: int = 0, world: int = 1,
                pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The endless stream of (lr, hr) batches from step ``start`` on: the trainer's loader,
    which ``plfw bench`` times as it is."""
    loader = torch.utils.data.DataLoader(
        SeededItems(dataset), batch_sampler=StepBatches(len(dataset), batch, seed, start, rank,
                                                        world),
        num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None)
    return iter(loader)


def batch_at(dataset: Any, batch: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (whole, single-process) batch of ``step``, drawn without advancing any stream."""
    items = [SeededItems(dataset)[k] for k in StepBatches(len(dataset), batch, seed,
                                                          step).for_step(step)]
    return torch.stack([lr for lr, _ in items]), torch.stack([hr for _, hr in items])
