"""What a job leaves in its run directory and how to read it back: ``ablate.json`` (its state),
its final generator (packed to fp16 safetensors or as trained) and the key its scores are
cached under, which outlives the generator when a study does not keep every model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from plfw.core.config import Config
from plfw.storage.checkpoint import atomic_write_bytes
from plfw.studies.ablation import STATE_FILE, Job


def read_state(run_dir: Path) -> dict[str, Any]:
    """A job's ``ablate.json`` (empty when it never ran or the file is damaged)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write a job's ``ablate.json`` whole or not at all (a kill never leaves half of it)."""
    atomic_write_bytes(run_dir / STATE_FILE, json.dumps(state, indent=2).encode())


PACKED = ".fp16.safetensors"  # a finished job's final generator under artefacts: final_fp16


def final_model(cfg: Config) -> Path | None:
    """The exported generator of the run's last phase that trained (packed or not)."""
    for name in reversed(list(cfg.phases)):
        for path in (Path(cfg.run_dir) / "models" / f"{name}{PACKED}",
                     Path(cfg.run_dir) / "models" / f"{name}.pt"):
            if cfg.phases[name].steps > 0 and path.is_file():
                return path
    return None


def finished_model(job: Job) -> Path | None:
    """The job's final generator if the job finished, else None."""
    return final_model(job.config) if read_state(job.run_dir).get("finished") else None


#: beside a packed generator: its :func:`model_key`, so its cached scores stay usable when the
#: generator itself is not kept (a study over its size budget commits scores, not every model)
KEY_SUFFIX = ".key"


def model_key(path: Path) -> str:
    """What scores are cached under: the file's name and the start of its SHA-256."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{path.name}:{digest}"


def kept_key(job: Job) -> str | None:
    """The model key of a finished job whose packed generator is absent but whose key file
    is there (its scores are in ``scores.json``); None otherwise."""
    if not read_state(job.run_dir).get("finished") or finished_model(job) is not None:
        return None
    for name in reversed(list(job.config.phases)):
        key = Path(job.config.run_dir) / "models" / f"{name}{PACKED}{KEY_SUFFIX}"
        if key.is_file():
            return key.read_text(encoding="utf-8").strip()
    return None
