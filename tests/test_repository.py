"""The repository stays light: what CONTRIBUTING.md allows to be tracked, within its budgets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = (".pt", ".pth", ".safetensors", ".onnx")
BUDGET_MB, FILE_MB, JSON_MB = 150, 8, 1
MODEL_HOMES = ("plfw/weights/", "docs/models/", "docs/study/")


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [REPO / p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def test_tracked_binaries_stay_within_the_budget() -> None:
    files = [p for p in _tracked() if p.suffix in (*MODELS, ".png", ".json")]
    sizes = {p.relative_to(REPO).as_posix(): p.stat().st_size for p in files}
    total = sum(sizes.values()) / 1e6
    assert total <= BUDGET_MB, f"tracked models, pictures and JSON: {total:.1f} MB > {BUDGET_MB}"
    big = {k: v for k, v in sizes.items() if v > FILE_MB * 1e6}
    assert not big, f"files over {FILE_MB} MB: {big}"
    json_big = {k: v for k, v in sizes.items() if k.endswith(".json") and v > JSON_MB * 1e6}
    assert not json_big, f"JSON files over {JSON_MB} MB: {json_big}"


def test_model_files_live_where_the_rule_says() -> None:
    models = [p.relative_to(REPO).as_posix() for p in _tracked() if p.suffix in MODELS]
    misplaced = [m for m in models if not m.startswith(MODEL_HOMES)]
    assert not misplaced, f"model files outside {MODEL_HOMES}: {misplaced}"
    # a study's own generators: final models only, as fp16 safetensors
    study = [m for m in models if m.startswith("docs/study/") and "/init/" not in m]
    assert all(m.endswith(".fp16.safetensors") for m in study), study
    assert not [p for p in _tracked() if "/checkpoints/" in p.as_posix()]
