"""plfw plugins --params / --reference: every component's parameters from its dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import REGISTRY
from omegaconf import MISSING

from plfw.cli import main
from plfw.core.params_doc import field_notes, markdown

REPO = Path(__file__).resolve().parents[1]


@dataclass
class _Example:
    root: str = MISSING  # where the images are
    # several words
    # over two lines
    crop: int = 96
    tags: list[str] = field(default_factory=list)


def test_notes_come_from_the_source() -> None:
    assert field_notes(_Example) == {"root": "where the images are",
                                     "crop": "several words over two lines"}


@dataclass
class _Variant(_Example):
    crop: int = 128  # a bigger crop


def test_a_subclass_keeps_its_bases_notes_and_may_override_them() -> None:
    assert field_notes(_Variant) == {"root": "where the images are", "crop": "a bigger crop"}


def test_params_of_one_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--params", "dataset:hr_folder"]) == 0
    out = capsys.readouterr().out
    assert "root: str = required" in out and "crop: int | None = 96  # HR crop side" in out
    assert main(["plugins", "--params", "hr_foldr"]) == 2
    assert "did you mean: hr_folder" in capsys.readouterr().err


def test_the_reference_page_is_in_step_with_the_code() -> None:
    page = (REPO / "docs" / "components.md").read_text()
    assert page == markdown(REGISTRY, "plfw"), (
        "docs/components.md is stale: run plfw plugins --reference docs/components.md")
