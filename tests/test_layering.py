"""The package's layering: imports point one way, and plugins use only the public API.

Read from the source with ``ast``, so deferred (function-level) imports count too; imports under
``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import plfw

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "plfw"
BUILTINS = REPO / "plugins" / "plfw_builtins"
EXAMPLE = REPO / "examples" / "plfw-example-plugin" / "plfw_example_plugin.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
#: plfw's own command plugins, loaded through entry points like a third party's
COMMAND_PLUGINS = ("plfw.bench.command", "plfw.studies.command", "plfw.mos.command")


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those inside ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for each runtime import; names empty for ``import m``."""
    found = []
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return found


def module_aliases(path: Path) -> dict[str, str]:
    """Local names bound to plfw modules (``from plfw import config as config_mod``...)."""
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("plfw.") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plfw"):
            for a in node.names:
                if f"{node.module}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def edges(name: str) -> set[str]:
    """The plfw modules ``name`` imports at run time (``from plfw import x`` of a submodule x
    is an import of plfw.x)."""
    out = set()
    for module, names, _ in imports(MODULES[name]):
        if not (module == "plfw" or module.startswith("plfw.")):
            continue
        subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        out |= set(subs) if subs and len(subs) == len(names) else {module}
    return out - {name}


def test_no_import_cycles() -> None:
    graph = {name: edges(name) for name in MODULES}
    done: set[str] = set()
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(" -> ".join([*stack[stack.index(node):], node]))
            return
        if node in done or node not in graph:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, [*stack, node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    cycles = sorted(set(cycles))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_package_modules_do_not_import_the_public_facade() -> None:
    """``plfw/__init__`` is the plugin API on top of the package (it imports its names lazily);
    the package's own modules import each other directly, so the facade cannot hide a cycle.
    Only the command line, the very top, reads it (for ``__version__``), and the command
    plugins (``plfw.hookimpl``), which are shaped like a third party's."""
    top = {"plfw", "plfw.cli", "plfw.__main__", *COMMAND_PLUGINS}
    offenders = [f"{name}: imports plfw" for name in MODULES if name not in top
                 and "plfw" in edges(name)]
    assert not offenders, "\n".join(offenders)


def test_no_private_name_used_across_modules() -> None:
    offenders = []
    for name, path in MODULES.items():
        for module, names, line in imports(path):
            if module.startswith("plfw"):
                offenders += [f"{name}:{line}: from {module} import {n}" for n in names
                              if n.startswith("_") and not n.startswith("__")]
        aliases = module_aliases(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                offenders.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)


def non_public_uses(path: Path) -> list[str]:
    """What a plugin module takes from plfw beyond ``plfw.__all__``."""
    public = set(plfw.__all__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [f"{path.name}:{node.lineno}: import {a.name}" for a in node.names
                    if a.name.startswith("plfw.")]
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "plfw" or node.module.startswith("plfw.")):
            if node.module != "plfw":
                bad.append(f"{path.name}:{node.lineno}: from {node.module} import ...")
            bad += [f"{path.name}:{node.lineno}: from plfw import {a.name}" for a in node.names
                    if node.module == "plfw" and a.name not in public]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "plfw" and node.attr not in public):
            bad.append(f"{path.name}:{node.lineno}: plfw.{node.attr}")
    return bad


def test_every_public_name_is_plfws_own_and_documented() -> None:
    """Each name in ``plfw.__all__`` resolves to an object defined inside plfw (or pluggy's
    marker), is listed in the API reference, and nothing public is missing from ``__all__``."""
    api = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    for name in plfw.__all__:
        value = getattr(plfw, name)
        module = getattr(value, "__module__", None) or getattr(type(value), "__module__", "")
        assert module.startswith(("plfw", "pluggy", "builtins", "types")), (name, module)
        assert re.search(rf"\b{re.escape(name)}\b", api), f"{name}: not in docs/api.md"
    lazy = set(plfw._LAZY) | set(plfw._RENAMED)
    assert lazy <= set(plfw.__all__), lazy - set(plfw.__all__)


def test_builtin_plugins_use_only_the_public_api() -> None:
    """Built-ins are shaped exactly like third-party plugins: plfw.__all__ and nothing else."""
    bad = [b for path in sorted(BUILTINS.rglob("*.py")) for b in non_public_uses(path)]
    assert not bad, "\n".join(bad)


def test_example_plugin_uses_only_the_public_api() -> None:
    assert non_public_uses(EXAMPLE) == []


def test_the_registry_is_passed_down_not_looked_up() -> None:
    """Only the public facade (``plfw.load_registry``, ``plfw.build``) reads the process-wide
    plugin set, and only the command line's entry and the loader itself load plugins: every
    other module is handed the registry it builds with."""
    offenders = []
    for root in (PACKAGE, BUILTINS, REPO / "scripts", REPO / "benchmarks", REPO / "tests"):
        for path in sorted(root.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(REPO).as_posix()
            if path == Path(__file__).resolve():
                continue
            if "get_plugins(" in text and rel not in ("plfw/__init__.py", "plfw/core/plugins.py"):
                offenders.append(f"{rel}: get_plugins()")
            if re.search(r"plugins\W+_CACHE", text) and rel != "plfw/core/plugins.py":
                offenders.append(f"{rel}: touches the plugin cache")
    assert not offenders, "\n".join(offenders)


#: the core's parts: they build whatever the config names and name no plugin themselves
CORE_PARTS = ("core", "nn", "device", "storage", "imaging", "evaluation", "inference", "training")
#: string constants in core modules that equal a built-in plugin's name but do not name it
NOT_PLUGIN_NAMES = {
    ("plfw/core/config.py", "*"): "the defaults that name built-ins, gathered in one place",
    ("plfw/evaluation/evaluate.py", "psnr_y"): "the core's own PSNR-Y function, by its name",
    ("plfw/evaluation/evaluate.py", "ssim_y"): "the core's own SSIM-Y function, by its name",
    ("plfw/inference/upscale.py", "srgan"): "the bundled model `--model srgan`, not a plugin",
}


def test_no_core_module_names_a_builtin_plugin() -> None:
    """Which generator, loss or metric runs is the config's choice: outside the defaults in
    ``plfw/core/config.py`` no core module names a built-in plugin (attribute names such as
    ``getattr(loss, "adversarial")`` do not count)."""
    from helpers import REGISTRY

    builtin = {name for table in REGISTRY.components.values() for name, c in table.items()
               if c.provider.plugin.startswith("builtin_")}
    assert {"mse", "vgg54", "srresnet", "psnr_y"} <= builtin
    offenders = []
    for name, path in MODULES.items():
        parts = name.split(".")
        if not (parts[1:2] and parts[1] in CORE_PARTS or name in ("plfw.assembly", "plfw.trainer")):
            continue
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        attributes = {id(call.args[1]) for call in ast.walk(tree)
                      if isinstance(call, ast.Call) and ast.unparse(call.func) in
                      ("getattr", "hasattr", "setattr") and len(call.args) > 1}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in builtin
                    and id(node) not in attributes and (rel, "*") not in NOT_PLUGIN_NAMES
                    and (rel, node.value) not in NOT_PLUGIN_NAMES):
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not offenders, "\n".join(offenders)


def test_command_plugins_are_registered_through_entry_points() -> None:
    """bench, ablate and mos reach the command line as a third party's command does: through
    the ``plfw`` entry-point group and ``plfw_register_commands``, never named by the core."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = set(project["project"]["entry-points"]["plfw"].values())
    assert set(COMMAND_PLUGINS) <= entry_points
    for name in COMMAND_PLUGINS:
        assert "def plfw_register_commands" in MODULES[name].read_text(encoding="utf-8")
    core = [n for n in MODULES if not n.startswith(("plfw.bench", "plfw.studies", "plfw.mos"))]
    offenders = [f"{n} imports {e}" for n in core for e in edges(n)
                 if e.startswith(("plfw.bench", "plfw.studies", "plfw.mos"))]
    assert not offenders, "\n".join(offenders)


#: what each part of the package may import (besides itself); the package docstrings say the
#: same in words. Top-level modules: assembly puts the training parts together, trainer runs
#: them, cli is the entry point; the command plugins (bench, studies, mos) sit on top.
LOWER = ("core",)
ALLOWED = {
    "core": set(),
    "nn": {"core"},
    "device": {"core"},
    "storage": {"core", "nn"},
    "imaging": {"core", "storage"},
    "evaluation": {"core", "imaging"},
    "inference": {"core", "nn", "storage", "device", "imaging", "evaluation"},
    "training": {"core", "nn", "storage", "device", "imaging", "evaluation", "inference"},
    "assembly": {"core", "nn", "storage", "device", "imaging", "evaluation", "inference",
                 "training"},
    "trainer": {"core", "nn", "storage", "device", "imaging", "evaluation", "inference",
                "training", "assembly"},
}
BELOW_COMMANDS = set(ALLOWED) | {"trainer"}
ALLOWED["bench"] = BELOW_COMMANDS - {"bench"}
ALLOWED["studies"] = BELOW_COMMANDS
ALLOWED["mos"] = BELOW_COMMANDS | {"studies"}  # mos create --from-ablation reads a report
ALLOWED["cli"] = BELOW_COMMANDS


def part(module: str) -> str:
    """``plfw.training.step`` -> ``training``; ``plfw.trainer`` -> ``trainer``."""
    return module.split(".")[1] if module.count(".") else "plfw"


def test_each_part_imports_only_the_parts_below_it() -> None:
    offenders = []
    for name in MODULES:
        here = part(name)
        if here in ("plfw", "__main__") or name in COMMAND_PLUGINS:
            continue  # the facade and the entry points (checked above)
        allowed = ALLOWED[here] | {here}
        offenders += [f"{name} imports {e}" for e in sorted(edges(name))
                      if part(e) not in allowed and e != "plfw"]
    assert not offenders, "\n".join(offenders)


def test_every_part_says_what_it_owns_and_may_import() -> None:
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "import" in doc, f"{folder.name}/__init__.py: say what it may import"
        assert folder.name in ALLOWED, f"{folder.name}: add its rule to ALLOWED"



def test_no_module_is_far_over_400_lines() -> None:
    long = {f"{n}: {len(p.read_text().splitlines())}" for n, p in MODULES.items()
            if len(p.read_text().splitlines()) > 440}
    long |= {f"{p.relative_to(BUILTINS)}: {len(p.read_text().splitlines())}"
             for p in BUILTINS.rglob("*.py") if len(p.read_text().splitlines()) > 440}
    assert not long, "split these: " + ", ".join(sorted(long))
