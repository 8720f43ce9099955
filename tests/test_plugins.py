"""Plugin discovery through real entry points, clashes, failures, env switches, and the guide.

Whatever depends on which distributions are installed runs ``python -m plfw`` in a subprocess
whose PYTHONPATH holds the test's packages: the example plugin installed by pip, and hand-made
dist-info folders for a name clash and a plugin that fails to import.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

import plfw
from plfw.core import hookspecs
from plfw.core.errors import UserError
from plfw.core.plugins import load_plugins
from plfw.nn.features import is_frozen

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plfw-example-plugin"
GUIDE = REPO / "docs" / "plugins.md"
EXAMPLE_CONFIG = REPO / "configs" / "examples" / "example_plugin.yaml"
SWITCHES = ("PLFW_DISABLE_PLUGIN_AUTOLOAD", "PLFW_BLOCK_PLUGINS", "PLFW_PLUGINS")


def run_plfw(*args: str, path: Path | list[Path] = (), **env: str) -> subprocess.CompletedProcess:
    """``python -m plfw ARGS`` from the repo root with ``path`` first on PYTHONPATH."""
    full = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    paths = [path] if isinstance(path, Path) else list(path)
    full["PYTHONPATH"] = os.pathsep.join(
        [*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    full.update(env)
    return subprocess.run([sys.executable, "-m", "plfw", *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=300)


def listing(*args: str, path: Path | list[Path] = (), **env: str) -> list[dict[str, Any]]:
    proc = run_plfw("plugins", "--json", *args, path=path, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(autouse=True)
def _autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery is what this module tests: plugins load as on a user's machine here (the rest
    of the suite sees the built-ins only, see conftest)."""
    monkeypatch.delenv("PLFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def rows(entries: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["kind"] == kind and e["name"] == name]


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, installed by pip (real dist-info + entry points) into a folder.

    pip builds from a copy so that no build/ or egg-info lands in the repository."""
    base = tmp_path_factory.mktemp("example")
    src = shutil.copytree(EXAMPLE, base / "src")
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--no-compile",
                    "--target", str(site), str(src)], check=True, capture_output=True,
                   timeout=300)
    return site


def _fake_dist(site: Path, dist: str, version: str, entry: str, module: str,
               source: str) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[plfw]\n{entry} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


DUP_SOURCE = """
    import plfw

    @plfw.hookimpl
    def plfw_register_generators(register):
        register("dup_net", lambda params: None, None, "clashes on purpose")
"""


@pytest.fixture(scope="session")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hand-made distributions: two register generator 'dup_net' (under the same
    entry-point name, which must not hide the second), one cannot import."""
    site = tmp_path_factory.mktemp("fake_site")
    _fake_dist(site, "plfw-dup-a", "1.0", "dup", "plfw_dup_a", DUP_SOURCE)
    _fake_dist(site, "plfw-dup-b", "2.0", "dup", "plfw_dup_b", DUP_SOURCE)
    _fake_dist(site, "plfw-broken", "0.3", "broken", "plfw_broken",
               "import plfw_missing_dependency  # noqa: F401\n")
    return site


@pytest.fixture(scope="session")
def fake_listing(fake_site: Path) -> list[dict[str, Any]]:
    return listing(path=fake_site)


def tiny_config(tmp_path: Path) -> Path:
    """A two-step built-in training run (srresnet, 32x32 crops of two shipped photos)."""
    cfg = {
        "generator": {"name": "srresnet", "blocks": 1, "channels": 8},
        "data": {"train": {"name": "hr_folder", "root": str(REPO / "assets/photos/train"),
                           "crop": 32, "max_images": 2},
                 "batch_size": 2},
        "train": {"device": "cpu", "log_every": 1},
        "phases": {"pretrain": {"steps": 2}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------ the installed example


def test_example_plugin_is_discovered_through_its_entry_point(example_site: Path) -> None:
    entries = listing(path=example_site)
    for kind, name in [("generator", "tiny_espcn"), ("feature_extractor", "tiny_gradients")]:
        (row,) = rows(entries, kind, name)
        assert (row["distribution"], row["version"], row["plugin"]) == (
            "plfw-example-plugin", "0.1.0", "example")
        assert row["description"]
    (builtin,) = rows(entries, "generator", "srresnet")
    assert (builtin["distribution"], builtin["version"]) == ("plfw", plfw.__version__)
    assert all(e["distribution"] == "plfw" for e in entries
               if e.get("plugin", "").startswith("builtin_"))
    ours = [e for e in entries if e["distribution"] in ("plfw", "plfw-example-plugin")]
    assert not [e for e in ours if "error" in e or e["kind"] == "failed"]


def test_example_plugin_trains_two_steps(example_site: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_plfw("train", str(EXAMPLE_CONFIG), "phases.espcn.steps=2", f"run_dir={run}",
                    "train.device=cpu", "data.batch_size=2", "data.val_images=1", "--quiet",
                    path=example_site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert state["config"]["generator"]["name"] == "tiny_espcn"
    assert (run / "models" / "espcn.pt").is_file()


def test_example_plugin_adds_a_command(example_site: Path) -> None:
    """A third party's command: listed with its provider, run with the command's registry, and
    its answer depends on the image (flat gray: no edges)."""
    entries = listing(path=example_site)
    assert [(r["distribution"], r["plugin"]) for r in rows(entries, "command", "edges")] == [
        ("plfw-example-plugin", "example")]
    assert rows(entries, "command", "ablate")[0]["distribution"] == "plfw"
    photo = next((REPO / "assets" / "photos" / "val").iterdir())
    busy = run_plfw("edges", str(photo), path=example_site)
    assert busy.returncode == 0, busy.stderr
    flat = Path(example_site).parent / "flat.png"
    Image.new("RGB", (16, 16), (128, 128, 128)).save(flat)
    calm = run_plfw("edges", str(flat), path=example_site)
    strength = [float(p.stdout.split()[-1]) for p in (busy, calm)]
    assert strength[0] > 0.01 and strength[1] == 0.0
    missing = run_plfw("edges", path=example_site)
    assert missing.returncode == 2 and "image" in missing.stderr


COMMANDS_SOURCE = """
    import plfw

    def run(args, registry):
        print("ran", args.command, len(registry.names("generator")) > 0)

    @plfw.hookimpl
    def plfw_register_commands(register):
        register("{name}", run, help="a test command")
        {extra}
"""


def test_command_clashes_and_failures_are_reported_like_plugins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name taken twice (or a core name) and a hook that raises mark that plugin failed;
    everything else keeps working."""
    for module, name, extra in (("cmd_a", "hello", ""), ("cmd_b", "hello", ""),
                                ("cmd_core", "train", ""),
                                ("cmd_raise", "later", "raise RuntimeError('no command')")):
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(
            COMMANDS_SOURCE.format(name=name, extra=extra)))
    env = {"PLFW_PLUGINS": "cmd_a,cmd_b,cmd_core,cmd_raise"}
    proc = run_plfw("hello", path=tmp_path, **env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ran hello True", proc.stderr
    failed = {e["name"]: e["error"] for e in listing(path=tmp_path, **env)
              if e["kind"] == "failed"}
    assert "registered by cmd_a" in failed["cmd_b"]
    assert "command 'train' is registered by plfw" in failed["cmd_core"]
    assert failed["cmd_raise"] == "RuntimeError: no command"
    broken = run_plfw("later", path=tmp_path, **env)  # registered, then its hook raised
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1
    assert "failed to register (RuntimeError: no command)" in broken.stderr
    unknown = run_plfw("nosuch", path=tmp_path, **env)
    assert unknown.returncode == 2
    assert "3 plugin(s) failed to load" in unknown.stderr and "cmd_raise" in unknown.stderr


def test_example_components_follow_the_conventions(example_site: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(example_site))
    registry = load_plugins().registry
    net = registry.build("feature_extractor",
                         {"name": "tiny_gradients", "taps": ["luma", "sobel", "sobel_half"]})
    assert is_frozen(net) and net.taps == ("luma", "sobel", "sobel_half")
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.state_dict()  # constant filters are not saved
    x = net.input_spec.convert(torch.rand(2, 3, 16, 16))
    out = net(x)
    assert out["luma"].shape == (2, 1, 16, 16) and out["sobel_half"].shape == (2, 2, 8, 8)
    flat = net(net.input_spec.convert(torch.full((1, 3, 8, 8), 0.3)))
    assert flat["sobel"].abs().max() < 1e-6  # no edges in a flat image
    with pytest.raises(UserError, match=r"unknown tap 'sobl' \(did you mean: sobel"):
        registry.build("feature_extractor", {"name": "tiny_gradients", "taps": ["sobl"]})

    gen = registry.build("generator", {"name": "tiny_espcn", "scale": 3, "channels": 8})
    assert gen.scale == 3 and tuple(gen.output_range) == (0.0, 1.0)
    assert gen(torch.rand(1, 3, 10, 12)).shape == (1, 3, 30, 36)


# ------------------------------------------------------------------ clashes and failures


def test_duplicate_name_is_listed_with_both_providers(fake_listing: list[dict[str, Any]]) -> None:
    dups = rows(fake_listing, "generator", "dup_net")
    assert {(r["distribution"], r["version"]) for r in dups} == {
        ("plfw-dup-a", "1.0"), ("plfw-dup-b", "2.0")}
    assert all("error" in r for r in dups)


def test_building_a_duplicate_name_names_both_distributions(
        fake_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(fake_site))
    registry = load_plugins().registry
    with pytest.raises(UserError) as info:
        registry.build("generator", "dup_net")
    message = str(info.value)
    assert "plfw-dup-a 1.0" in message and "plfw-dup-b 2.0" in message
    assert "PLFW_BLOCK_PLUGINS" in message


def test_duplicate_name_in_a_config_is_a_one_line_cli_error(fake_site: Path,
                                                           tmp_path: Path) -> None:
    proc = run_plfw("train", str(tiny_config(tmp_path)), "generator=dup_net",
                    f"run_dir={tmp_path / 'run'}", path=fake_site)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("plfw: error: generator 'dup_net' is registered by more than one")
    assert "plfw-dup-a 1.0" in line and "plfw-dup-b 2.0" in line


def test_failed_plugin_is_reported(fake_site: Path, fake_listing: list[dict[str, Any]]) -> None:
    (failed,) = [e for e in fake_listing if e["kind"] == "failed"]
    assert (failed["name"], failed["distribution"], failed["version"]) == (
        "broken", "plfw-broken", "0.3")
    assert "ModuleNotFoundError" in failed["error"]
    assert "plfw_missing_dependency" in failed["error"]

    proc = run_plfw("plugins", path=fake_site)
    assert proc.returncode == 0, proc.stderr
    assert ("FAILED plugin 'broken' from plfw-broken 0.3: ModuleNotFoundError"
            in proc.stdout)
    assert "srresnet" in proc.stdout


def test_training_works_beside_a_failed_plugin(fake_site: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_plfw("train", str(tiny_config(tmp_path)), f"run_dir={run}", "--quiet",
                    path=fake_site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "step_00000002.pt").is_file()


# ------------------------------------------------------------------ environment switches


def _provider_of(registry: Any, kind: str, name: str) -> str:
    return registry.get(kind, name).provider.distribution


def test_block_plugins_by_entry_point_or_distribution(
        fake_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("PLFW_BLOCK_PLUGINS", "plfw-dup-b, broken")
    plugins = load_plugins()
    assert _provider_of(plugins.registry, "generator", "dup_net") == "plfw-dup-a"
    assert not plugins.registry.conflicts and not plugins.failed

    monkeypatch.setenv("PLFW_BLOCK_PLUGINS", "plfw-dup-a")
    plugins = load_plugins()
    assert _provider_of(plugins.registry, "generator", "dup_net") == "plfw-dup-b"
    assert [f.name for f in plugins.failed] == ["broken"]

    monkeypatch.setenv("PLFW_BLOCK_PLUGINS", "dup")  # the entry-point name both use
    plugins = load_plugins()
    assert "dup_net" not in plugins.registry.names("generator")
    assert "srresnet" in plugins.registry.names("generator")


def test_disable_autoload_keeps_only_the_builtins(example_site: Path, fake_site: Path) -> None:
    entries = listing(path=[example_site, fake_site], PLFW_DISABLE_PLUGIN_AUTOLOAD="1")
    assert {e["distribution"] for e in entries} == {"plfw"}
    assert rows(entries, "generator", "srresnet")
    assert not [e for e in entries if e["kind"] == "failed" or "error" in e]


def test_plfw_plugins_loads_a_module_by_name(fake_site: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.setenv("PLFW_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PLFW_PLUGINS", "plfw_dup_a")
    plugins = load_plugins()
    component = plugins.registry.get("generator", "dup_net")
    assert (component.provider.distribution, component.provider.version) == (
        "plfw_dup_a", "local")


def test_bad_hook_implementations_are_reported_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plfw_test_misspelt.py").write_text(textwrap.dedent("""
        import plfw

        @plfw.hookimpl
        def plfw_register_generators(registr):
            registr("never", lambda params: None)
    """))
    (tmp_path / "plfw_test_raising.py").write_text(textwrap.dedent("""
        import plfw

        @plfw.hookimpl
        def plfw_register_losses(register):
            register("kept", lambda params: None)
            raise RuntimeError("half registered")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PLFW_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PLFW_PLUGINS", "plfw_test_misspelt,plfw_test_raising")
    plugins = load_plugins()
    failed = {f.name: f.error for f in plugins.failed}
    assert "registr" in failed["plfw_test_misspelt"]
    assert failed["plfw_test_raising"] == "RuntimeError: half registered"
    assert "never" not in plugins.registry.names("generator")
    assert "srresnet" in plugins.registry.names("generator")


# ------------------------------------------------------------------ the guide


def test_every_hookspec_is_documented_with_its_signature() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    specs = [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "plfw_spec")]
    kinds = ("generators", "discriminators", "feature_extractors", "losses", "datasets",
             "metrics", "callbacks", "commands")
    assert {name for name, _ in specs} == {*(f"plfw_register_{k}" for k in kinds),
                                           "plfw_resolve_weights"}
    for name, fn in specs:
        sig = inspect.signature(fn)  # annotations stay source strings (postponed evaluation)
        params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
        assert f"{name}({params}) -> {sig.return_annotation}" in guide, name


def test_guide_shows_the_example_files_as_they_are() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    for path in [EXAMPLE / "pyproject.toml", EXAMPLE / "plfw_example_plugin.py",
                 EXAMPLE_CONFIG]:
        assert path.read_text(encoding="utf-8") in guide, f"{path} differs from docs/plugins.md"
