"""Shared fixtures: the benchmark images in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import helpers
import pytest

# The suite sees plfw's built-ins only (and the example plugin where a test installs it), not
# whatever other plfw plugins this machine has installed.
os.environ["PLFW_DISABLE_PLUGIN_AUTOLOAD"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PLFW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (Set5, Set14, T91); tests that need it skip cleanly without it."""
    if not (SHARED_DATA / "benchmarks" / "Set5" / "HR").is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """plfw's cache (the speed probe) goes to a temporary folder, not the user's home; probes
    are measured once per test session."""
    os.environ.setdefault("PLFW_CACHE_DIR", str(tmp_path_factory.mktemp("plfw-cache")))


def _tmpfs(folder: Path, options: str, what: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` for the test (root and mount permission, else a skip)."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {what} tmpfs here: {done.stderr.strip()[:120]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs to fill up (needs root and mount permission; skipped otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    yield from _tmpfs(mnt, "size=2m,mode=0755", "a size-limited")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An existing folder nothing can be written to: mode 0555 for a normal user; for root
    (which ignores modes) a read-only tmpfs mounted there (skipped where mounting is not
    allowed)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    yield from _tmpfs(folder, "ro,size=1m", "a read-only")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(helpers.CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1000,800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let selenium fetch a driver or browser
    driver = webdriver.Chrome(service=Service(str(helpers.CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
