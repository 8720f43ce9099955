"""The documentation site builds in strict mode (a broken link or a missing API reference fails)
and its pages show their pictures in a real headless browser."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import browser_test

import plfw

REPO = Path(__file__).resolve().parents[1]

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="needs the docs extra: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-d", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@needs_mkdocs
def test_the_site_builds_with_an_api_reference_of_the_public_names(site: Path) -> None:
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in [n for n in plfw.__all__ if n != "__version__"]:
        shown = "imresize" if name == "matlab_imresize" else name
        assert shown in api, f"{name} is missing from the API reference"
    for hook in ("plfw_register_generators", "plfw_resolve_weights"):
        assert hook in api
    assert (site / "ablation" / "index.html").is_file()


def test_every_public_name_is_listed_in_the_api_page() -> None:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    listed = {line.split(".")[-1].strip() for line in page.splitlines() if line.startswith(":::")}
    missing = [n for n in plfw.__all__
               if n not in listed | {"__version__", "matlab_imresize"}]
    assert not missing, f"add to docs/api.md: {missing}"


@needs_mkdocs
@browser_test
@pytest.mark.parametrize("page", ["index.html", "ablation/index.html"])
def test_pages_show_their_pictures(site: Path, page: str, browser) -> None:
    browser.get((site / page).as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])")
    pictures = [(src, ok) for src, ok in images if src.endswith(".png")]
    assert pictures, f"{page} shows no picture"
    assert all(ok for _, ok in pictures), [src for src, ok in pictures if not ok]

