"""Finds plugins through the ``plfw`` entry-point group, loads them and fills the registry.

Built-ins come through the same group as third-party packages. A plugin that fails to import is
recorded and skipped; two distributions providing the same entry-point name are both loaded and
any component name they share is reported as a clash naming both.

Environment switches:
  PLFW_DISABLE_PLUGIN_AUTOLOAD=1  load only plfw's own built-ins (plus PLFW_PLUGINS)
  PLFW_BLOCK_PLUGINS=a,b          skip entry points (or whole distributions) with these names
  PLFW_PLUGINS=mod.a,mod.b        also load these importable modules as plugins
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from plfw.core import hookspecs
from plfw.core.registry import KINDS, PLURAL, FailedPlugin, Provider, Register, Registry

GROUP = "plfw"
OWN_DIST = "plfw"


@dataclass
class Plugins:
    """The plugin manager (for hooks beyond component registration, e.g. commands), the
    registry it filled and who provided what."""

    manager: pluggy.PluginManager
    registry: Registry
    providers: dict[str, Provider]

    @property
    def failed(self) -> list[FailedPlugin]:
        return self.registry.failed


def _env_list(var: str) -> list[str]:
    return [x.strip() for x in os.environ.get(var, "").split(",") if x.strip()]


def _entry_points() -> list[tuple[metadata.EntryPoint, str, str]]:
    found = []
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == GROUP:
                found.append((ep, dist.metadata["Name"] or "?", dist.version or "?"))
    # A distribution may be visible twice on sys.path (editable + build dir): keep the first.
    unique: dict[tuple[str, str], tuple[metadata.EntryPoint, str, str]] = {}
    for ep, dist, version in found:
        unique.setdefault((dist.lower(), ep.name), (ep, dist, version))
    return sorted(unique.values(),
                  key=lambda t: (t[1].lower() != OWN_DIST, t[1].lower(), t[0].name))


def load_plugins() -> Plugins:
    """Build a fresh plugin manager and registry from the current environment."""
    pm = pluggy.PluginManager("plfw")
    pm.add_hookspecs(hookspecs)
    failed: list[FailedPlugin] = []
    providers: dict[str, Provider] = {}
    blocked = set(_env_list("PLFW_BLOCK_PLUGINS"))
    autoload = os.environ.get("PLFW_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in {"1", "true"}

    candidates: list[tuple[str, Any, str, str]] = []
    for ep, dist, version in _entry_points():
        if ep.name in blocked or dist in blocked:
            continue
        if not autoload and dist.lower() != OWN_DIST:
            continue
        candidates.append((ep.name, ep.load, dist, version))
    for module in _env_list("PLFW_PLUGINS"):
        if module not in blocked:
            load = lambda m=module: importlib.import_module(m)  # noqa: E731
            candidates.append((module, load, module, "local"))

    for name, load, dist, version in candidates:
        try:
            plugin = load()
        except Exception as exc:  # a broken plugin must not take the framework down
            failed.append(FailedPlugin(name, dist, version, f"{type(exc).__name__}: {exc}"))
            continue
        key = f"{dist}:{name}"
        if pm.is_registered(plugin):
            continue
        try:
            pm.register(plugin, name=key)
        except Exception as exc:  # e.g. a hookimpl with a wrong signature
            failed.append(FailedPlugin(name, dist, version, f"{type(exc).__name__}: {exc}"))
            continue
        providers[key] = Provider(name, dist, version)

    registry = Registry(weights_hook=pm.hook.plfw_resolve_weights, failed=failed)
    for kind in KINDS:
        hook = getattr(pm.hook, f"plfw_register_{PLURAL[kind]}")
        impls = sorted(hook.get_hookimpls(), key=lambda i: i.plugin_name)
        for impl in impls:
            provider = providers[impl.plugin_name]
            try:
                impl.function(register=Register(registry, kind, provider))
            except Exception as exc:
                failed.append(FailedPlugin(provider.plugin, provider.distribution,
                                           provider.version, f"{type(exc).__name__}: {exc}"))
    return Plugins(pm, registry, providers)


_CACHE: Plugins | None = None


def get_plugins(reload: bool = False) -> Plugins:
    """The process-wide plugin set, loaded on first use: for the command line's entry and the
    public facade (``plfw.build``) only; everything else is handed its registry."""
    global _CACHE
    if _CACHE is None or reload:
        _CACHE = load_plugins()
    return _CACHE
