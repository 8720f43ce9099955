"""The loss networks a job trains against: a metric built on one of them must not judge that job
(a run would be graded by the network it was trained to please)."""

from __future__ import annotations

import dataclasses
from typing import Any

from plfw.core.config import Config
from plfw.core.errors import UserError
from plfw.core.registry import Registry


def _network_name(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"]
    return None


def _default_network(registry: Registry, loss: str) -> Any:
    """The ``network`` param's default of loss ``loss`` (None when it has none)."""
    try:
        params = registry.get("loss", loss).params
    except UserError:
        return None
    found = getattr(params, "__dataclass_fields__", {}).get("network")
    if found is None:
        return None
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return None if found.default is dataclasses.MISSING else found.default


def training_networks(cfg: Config, registry: Registry) -> set[str]:
    """Names of the loss networks any phase of ``cfg`` trains against (a loss's own default
    ``network`` where its spec names none)."""
    names: set[str] = set()
    for phase in cfg.phases.values():
        for spec in (phase.losses or {}).values():
            if not isinstance(spec, dict):
                continue
            network = spec.get("network")
            if network is None and isinstance(spec.get("name"), str):
                network = _default_network(registry, spec["name"])
            name = _network_name(network)
            if name:
                names.add(name)
    return names
