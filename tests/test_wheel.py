"""plfw works from an installed wheel, outside this checkout: the wheel is built from a copy of
the tracked files, installed into a fresh virtual environment (which borrows torch and the other
dependencies from this interpreter's site-packages), and its ``plfw`` command runs from a folder
that has nothing of the repository: ``plfw plugins``, ``plfw upscale`` on a shipped photo with a
bundled model, and a one-repeat ``plfw bench`` with the config and reference step the wheel
ships."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject's licence expression
        pytest.skip(f"setuptools {setuptools.__version__} cannot build plfw without build "
                    f"isolation (needs 77 or later)")
    base = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "plfw", "plugins", "pyproject.toml",
                              "README.md"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: nothing to build a wheel from")
    source = base / "source"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(dist), str(source)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("plfw-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q",
                    "--disable-pip-version-check", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    away = base / "elsewhere"  # the working folder: no configs/, assets/ or ../shared
    away.mkdir()
    return {"python": python, "plfw": venv / "bin" / "plfw", "away": away}


def run(installed: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run([str(installed["plfw"]), *args], cwd=installed["away"], env=env,
                          capture_output=True, text=True, timeout=900)


def test_the_wheel_is_what_runs(installed: dict[str, Path]) -> None:
    where = subprocess.run([str(installed["python"]), "-c",
                            "import plfw, plfw_builtins; print(plfw.__file__); "
                            "print(plfw_builtins.__file__)"],
                           cwd=installed["away"], capture_output=True, text=True, check=True)
    for line in where.stdout.split():
        assert Path(line).is_relative_to(installed["python"].parents[1]), line


def test_plugins_lists_builtins_and_commands_from_the_wheel(installed: dict[str, Path]) -> None:
    proc = run(installed, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert not [e for e in entries if e["kind"] == "failed"]
    names = {(e["kind"], e["name"]) for e in entries}
    assert {("generator", "srresnet"), ("feature_extractor", "vgg19"), ("metric", "psnr_y"),
            ("command", "bench"), ("command", "ablate"), ("command", "mos")} <= names


def test_upscale_a_shipped_photo_with_a_bundled_model(installed: dict[str, Path]) -> None:
    photo = REPO / "assets" / "photos" / "val" / "camera.png"
    out = installed["away"] / "up"
    proc = run(installed, "upscale", str(photo), "--model", "srresnet", "--out", str(out),
               "--quiet", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    with Image.open(photo) as lr, Image.open(out / "camera_x4.png") as sr:
        assert sr.size == (4 * lr.size[0], 4 * lr.size[1])


def test_bench_runs_with_the_config_and_reference_the_wheel_ships(
        installed: dict[str, Path]) -> None:
    proc = run(installed, "bench", "--json", "--repeats", "1", "--warmup", "0", "--steps", "mse",
               "--batch", "1", "--crop", "16", "--device", "cpu", "generator.blocks=2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    site = installed["python"].parents[1]
    assert Path(out["settings"]["config"]).is_relative_to(site)
    assert Path(out["reference"]).is_relative_to(site)
    assert out["steps"]["mse"]["speedup"] > 0 and "loader" not in out  # no photos out there
