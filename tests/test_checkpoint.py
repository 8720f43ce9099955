"""Checkpoints: atomic writes, keep-last-N, and no code execution when loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plfw.core.errors import UserError
from plfw.storage.checkpoint import CheckpointDir, atomic_write_bytes, load_checkpoint, safe_load


class Payload:
    """Anything pickled by class reference; weights_only loading must refuse it."""

    def __reduce__(self):  # noqa: ANN204
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "plfw-checkpoint-1", "x": Payload()}, path)
    with pytest.raises(UserError, match="refused to load"):
        safe_load(path)
    out = subprocess.run([sys.executable, "-m", "plfw", "eval", "--model", str(path), "--hr",
                          str(tmp_path), "--scale", "4"], capture_output=True, text=True)
    assert out.returncode == 2 and "this must never run" not in out.stdout + out.stderr


def _floor(requirement: str) -> tuple[int, ...]:
    """The version after ``>=`` in a requirement string, as numbers ((2, 10) for 2.10)."""
    version = requirement.split(">=")[1].split(",")[0].split(";")[0].strip()
    return tuple(int(part) for part in version.split("."))


def test_torch_floor_has_no_known_weights_only_bypass() -> None:
    """Issue 36: ``weights_only=True`` is what keeps pickled code from running, and it was
    bypassed in torch <= 2.5.1 (CVE-2025-32434, fixed in 2.6.0) and again below 2.10.0
    (CVE-2026-24747, memory corruption in the weights-only unpickler, fixed in 2.10.0): the
    dependency floor, and the torchvision that goes with it, exclude both; the README says so."""
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {d.split(">=")[0].strip(): _floor(d) for d in deps if ">=" in d}
    assert floors["torch"] >= (2, 10) and floors["torchvision"] >= (0, 25), floors
    readme = (repo / "README.md").read_text()
    assert "CVE-2025-32434" in readme and "CVE-2026-24747" in readme and "torch>=2.10" in readme


def test_truncated_and_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"format": "plfw-checkpoint-1", "w": torch.ones(3)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        safe_load(cut)
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(1)}, other)
    with pytest.raises(UserError, match="not a plfw training checkpoint"):
        load_checkpoint(other)


def test_keep_last_and_latest_pointer(tmp_path: Path) -> None:
    ckpt = CheckpointDir(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        ckpt.save({"step": torch.tensor(step)}, step)
    assert ckpt.steps() == [2, 3]
    assert ckpt.latest() == ckpt.path(3)
    assert not list(tmp_path.glob("*.tmp"))  # no temporary files left behind


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):  # the write itself fails half-way through the protocol
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_resume_point_skips_a_truncated_latest_but_not_a_pickled_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cut-short newest checkpoint is set aside (one warning) and the one before is chosen;
    one carrying pickled objects is still refused outright, never silently stepped over."""
    from plfw.training.rundir import RunDir

    run = RunDir(tmp_path, keep_last=3)
    for step in (1, 2, 3):
        run.ckpt.save({"w": torch.full((100,), float(step))}, step)
    newest = run.ckpt.path(3)
    newest.write_bytes(newest.read_bytes()[:-300])
    path, state = run.newest_readable()
    assert path == run.ckpt.path(2)
    assert torch.equal(state["w"], torch.full((100,), 2.0))
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"plfw: warning: {newest}: not a readable")
    assert run.ckpt.steps() == [1, 2] and newest.with_name(newest.name + ".unreadable").is_file()
    torch.save({"format": "plfw-checkpoint-1", "x": Payload()}, run.ckpt.path(4))
    with pytest.raises(UserError, match="refused to load"):
        run.newest_readable()
    assert run.ckpt.steps() == [1, 2, 4]
