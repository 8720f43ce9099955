"""YAML files whose aliases expand to huge documents are refused before anything reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plfw.ablation import load_ablation
from plfw.cli import main
from plfw.config import MAX_YAML_NODES, load_config, load_yaml
from plfw.errors import UserError


def bomb(levels: int = 8) -> str:
    """Eight lines that stand for 10^8 list items (each level repeats the previous ten times)."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, levels):
        key = "seed" if i == levels - 1 else f"a{i}"
        lines.append(f"{key}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_in_configs_and_ablation_files(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture
                                                              ) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    with pytest.raises(UserError, match=r"aliases expand to 1.23e\+08 values"):
        load_config(path)
    with pytest.raises(UserError, match="aliases expand"):
        load_ablation(path)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err


def test_ordinary_aliases_still_work() -> None:
    text = "base: &b {lr: 1.0e-4, steps: 3}\nphases: {a: *b, b: *b}\nlist: [*b, *b]\n"
    assert load_yaml(text, "t") == yaml.safe_load(text)
    # just below the limit is fine; the count is of expanded values, not of lines
    assert load_yaml(bomb(4), "t")["seed"][0][0][0][0] == "x"  # 10^4 items
    with pytest.raises(UserError):
        load_yaml(bomb(6), "t")  # 10^6 > MAX_YAML_NODES
    assert MAX_YAML_NODES >= 10_000


def test_recursive_alias_is_not_a_loop() -> None:
    value = load_yaml("a: &a [1, *a]\n", "t")
    assert value["a"][0] == 1 and value["a"][1] is value["a"]
