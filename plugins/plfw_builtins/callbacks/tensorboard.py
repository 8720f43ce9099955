"""Built-in callbacks: TensorBoard logging (when the tensorboard package is installed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plfw
from plfw import UserError


@dataclass
class TensorBoardParams:
    log_dir: str = ""  # default: <run_dir>/tensorboard


class TensorBoard:
    """Writes the averaged losses and validation metrics as TensorBoard scalars."""

    def __init__(self, params: TensorBoardParams) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("callback 'tensorboard' needs the tensorboard package: "
                            "pip install tensorboard") from None
        self._writer_cls = SummaryWriter
        self.log_dir = params.log_dir
        self.writer: Any = None

    def on_train_start(self, trainer: Any) -> None:
        if self.writer is None:
            self.writer = self._writer_cls(self.log_dir or str(trainer.run_dir / "tensorboard"))

    def on_step_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def on_validation_end(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key.replace("val_", "val/"), value, step)

    def on_train_end(self, trainer: Any) -> None:
        if self.writer is not None:
            self.writer.flush()


@plfw.hookimpl
def plfw_register_callbacks(register: Any) -> None:
    register("tensorboard", TensorBoard, TensorBoardParams,
             "TensorBoard scalars for losses and validation metrics")
