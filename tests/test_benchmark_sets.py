"""scripts/benchmark_sets.py: SelfExSR's pairs laid out for `plfw eval`, from a clone or its
git directory, each pair checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_sets.py"


def _release(root: Path, lr_size: tuple[int, int] = (3, 2)) -> Path:
    folder = root / "data" / "BSD100" / "image_SRF_4"
    folder.mkdir(parents=True)
    for i in (1, 2):
        Image.new("RGB", (12, 8), (i, 2, 3)).save(folder / f"img_00{i}_SRF_4_HR.png")
        Image.new("RGB", lr_size, (i, 2, 3)).save(folder / f"img_00{i}_SRF_4_LR.png")
    return root


def _run(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--sets", "BSD100"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("bare", [False, True])
def test_pairs_are_laid_out_as_plfw_eval_reads_them(tmp_path: Path, bare: bool) -> None:
    source = _release(tmp_path / "SelfExSR")
    if bare:
        git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t"]
        for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "data"]):
            subprocess.run(git + cmd, check=True)
        subprocess.run(["rm", "-r", str(source / "data")], check=True)
        source = source / ".git"
    done = _run(source, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    hr = sorted(p.name for p in (tmp_path / "out" / "BSD100" / "HR").iterdir())
    lr = tmp_path / "out" / "BSD100" / "LR_bicubic" / "X4" / "img_002.png"
    assert hr == ["img_001.png", "img_002.png"] and Image.open(lr).getpixel((0, 0)) == (2, 2, 3)
    again = _run(source, tmp_path / "out")  # nothing is overwritten
    assert again.returncode and "is not empty" in again.stderr


def test_a_pair_whose_sizes_do_not_match_is_refused(tmp_path: Path) -> None:
    done = _run(_release(tmp_path / "SelfExSR", lr_size=(4, 2)), tmp_path / "out")
    assert done.returncode and "is not 4x LR" in done.stderr
    missing = _run(tmp_path / "elsewhere", tmp_path / "out2")
    assert missing.returncode and "no data/BSD100/image_SRF_4" in missing.stderr
