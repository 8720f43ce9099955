"""plfw: a plugin-based perceptual-loss training framework for single-image super-resolution."""

from __future__ import annotations

from typing import Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("plfw")


def build(kind: str, spec: Any, where: str = "") -> Any:
    """Build a registered component from 'name' or {'name': ..., **params}."""
    from plfw.plugins import get_plugins

    return get_plugins().registry.build(kind, spec, where)


def list_components(kind: str) -> list[str]:
    """Names of the registered components of one kind."""
    from plfw.plugins import get_plugins

    return get_plugins().registry.names(kind)


def resolve_weights(kind: str, name: str, weights: str) -> Any:
    """Ask installed plugins for a local weights file (the plfw_resolve_weights hook)."""
    from plfw.plugins import get_plugins

    return get_plugins().manager.hook.plfw_resolve_weights(kind=kind, name=name, weights=weights)


__all__ = ["__version__", "build", "hookimpl", "list_components", "resolve_weights"]
