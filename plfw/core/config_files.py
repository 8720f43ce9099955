"""Reading config files: YAML parsed with bounded size (an alias bomb is one line, not an
out-of-memory), ``extends:`` chains merged (mappings merge, lists and values replace; a
``_replace: true`` mapping replaces instead), every problem a one-line error naming the file.
:mod:`plfw.core.config` turns the merged mapping into a typed, validated config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from plfw.core.errors import UserError

#: Most values a YAML document may stand for once its aliases are expanded. A config has a few
#: hundred; eight lines of nested aliases can stand for 10^8 and hang everything downstream.
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values ``node`` stands for with every alias expanded (memoised per node: linear time)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = total
    return total


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` that refuses documents whose aliases expand past MAX_YAML_NODES."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    size = _expanded_size(node, {})
    if size > MAX_YAML_NODES:
        raise UserError(f"{where}: YAML aliases expand to {size:.3g} values (at most "
                        f"{MAX_YAML_NODES:,}); write the values out instead of nesting aliases")
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_problem(exc: Exception) -> str:
    """What is wrong with a file that did not parse, and where, without its text: the file
    may be anything a config's ``extends`` names (``/etc/shadow``), so no line of it, and no
    name quoted from it (an alias, a tag), is echoed; one-character quotes (a tab, a colon)
    and token names (``'<stream end>'``) stay."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"a control character (#x{exc.character:x}) at byte {exc.position}"
    problem = (getattr(exc, "problem", None) or getattr(exc, "context", None)
               or type(exc).__name__)
    parts = str(problem).split("'")
    for i in range(1, len(parts) - 1, 2):
        quoted = parts[i]
        if len(quoted) > 2 and not (quoted.startswith("<") and quoted.endswith(">")):
            parts[i] = "..."
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return "'".join(parts) + where


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (config, ablation file), every mistake as one line."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


REPLACE = "_replace"


def _replaces(value: dict[str, Any]) -> bool:
    """Whether a mapping carries ``_replace: true`` (replace the base's mapping, not merge)."""
    flag = value.get(REPLACE, False)
    if not isinstance(flag, bool):
        raise UserError(f"{REPLACE}: expected true or false, got {flag!r}")
    return flag


def strip_replace(value: Any) -> Any:
    """``value`` without the ``_replace`` keys of its mappings (at every depth)."""
    if isinstance(value, dict):
        return {k: strip_replace(v) for k, v in value.items() if k != REPLACE}
    if isinstance(value, list):
        return [strip_replace(v) for v in value]
    return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in ``over`` replace those in ``base``. A mapping
    in ``over`` holding ``_replace: true`` replaces the base's mapping whole (e.g. a loss's
    ``layers:``, which would otherwise keep the base's taps beside the child's)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and _replaces(value):
            out[key] = strip_replace(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, following ``extends`` (a path relative to the file, or a list)."""
    path = path.resolve()
    if path in _seen:
        raise UserError(f"{path}: 'extends' loops back to itself")
    data = read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return strip_replace(data)
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents):
        raise UserError(f"{path}: 'extends' must be a config file path or a list of them "
                        f"(relative to this file), got {parents!r}")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _merge(merged, read_config_file(path.parent / str(parent), _seen + (path,)))
    try:
        return strip_replace(_merge(merged, data))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
