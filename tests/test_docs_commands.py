"""Every ``plfw ...`` command shown in a fenced block of the README and the guides names a real
command and only options that command has (their ``--help`` form runs), and the quick
documentation commands run fully."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from plfw.cli import build_parser, main
from plfw.core.plugins import load_plugins

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|shell|console|)\n(.*?)^```", re.M | re.S)


def commands() -> list[tuple[str, str]]:
    """(page, command) for every fenced line that runs plfw (continuations joined)."""
    found = []
    for page in PAGES:
        for _, block in FENCE.findall(page.read_text(encoding="utf-8")):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.strip().removeprefix("$ ")
                for part in re.split(r"&&|;", line):
                    part = part.split("#")[0].strip()
                    if part.startswith(("plfw ", "nohup plfw ")):
                        found.append((page.relative_to(REPO).as_posix(), part))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public accessor for subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _split(command: str) -> tuple[list[str], argparse.ArgumentParser, list[str]]:
    words = shlex.split(command.removeprefix("nohup "))[1:]
    words = [w for w in words if w not in (">", "2>&1", "&") and not w.startswith(">")]
    parser, path = build_parser(load_plugins()), []
    while words and words[0] in (subs := _subparsers(parser)):
        path.append(words[0])
        parser = subs[words.pop(0)]
    return path, parser, words


COMMANDS = commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize(("page", "command"), COMMANDS,
                         ids=[f"{p}:{c[:40]}" for p, c in COMMANDS])
def test_documented_command_and_options_exist(page: str, command: str) -> None:
    path, parser, rest = _split(command)
    options = {o for a in parser._actions for o in a.option_strings}
    unknown = [w.split("=")[0] for w in rest if w.startswith("--")
               and w.split("=")[0] not in options and not w.startswith("--[")]
    assert path or command.strip() in ("plfw --version",), f"{page}: no subcommand: {command}"
    assert not unknown, f"{page}: {command}: no such option(s) {unknown}"
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0


@pytest.mark.parametrize("command", ["plfw plugins", "plfw --version"])
def test_quick_documented_commands_run(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(shlex.split(command)[1:])
    except SystemExit as exc:  # --version exits through argparse
        code = exc.code
    assert code == 0, capsys.readouterr().err
