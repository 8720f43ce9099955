"""YAML files whose aliases expand to huge documents are refused before anything reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plfw.cli import main
from plfw.core.config import load_config
from plfw.core.config_files import MAX_YAML_NODES, load_yaml
from plfw.core.errors import UserError
from plfw.studies.ablation import load_ablation


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


# ------------------------------------------------ a file that does not parse is not echoed

SECRET = "s3cr3t-T0KEN"


@pytest.mark.parametrize("text", [
    f"root:$6${SECRET}$hash:19000:0:99999:7:::\n\tdaemon:$6${SECRET}:19000:0:99999:7:::\n",
    f"key: [unclosed {SECRET}\n",
    f"a: b: {SECRET}\n",
    f"x: *{SECRET}\n",  # an undefined alias: its name is the file's text
    f"x: !{SECRET} foo\n",  # an unknown tag
    f'"{SECRET}\\q"\n',
    f"{SECRET}\x00\n",  # a control character
    f"{SECRET}\n",  # parses, as a plain string
], ids=["shadow", "flow", "mapping", "alias", "tag", "escape", "control", "plain"])
def test_errors_name_the_line_but_never_echo_the_file(tmp_path: Path, text: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 36: ``extends: /etc/shadow`` printed the file's first line in its error."""
    secret = tmp_path / "secret"
    secret.write_text(text)
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {secret}\n")
    assert main(["train", str(child)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(secret) in err, err
    assert SECRET not in err and "s3cr3t" not in err, err
    assert "line" in err or "byte" in err or "top level must be a mapping" in err, err


def test_a_file_that_is_not_utf8_is_not_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET.encode() + b"\xff\xfe\n")
    with pytest.raises(UserError) as err:
        load_config(secret)
    assert SECRET not in str(err.value) and "not UTF-8" in str(err.value)
