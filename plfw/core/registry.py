"""Name -> factory tables, one per component kind, filled by the registration hooks.

Each entry remembers which distribution provided it, so a clash between two packages is reported
with both providers instead of one silently winning.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from plfw.core.errors import UserError, suggest

KINDS = (
    "generator",
    "discriminator",
    "feature_extractor",
    "loss",
    "dataset",
    "metric",
    "callback",
)
PLURAL = {k: ("losses" if k == "loss" else k + "s") for k in KINDS}


@dataclass(frozen=True)
class Provider:
    """Where a component came from: entry-point name, distribution and its version."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin '{self.plugin}')"


@dataclass(frozen=True)
class FailedPlugin:
    """A plugin that could not be loaded or whose registration hook raised."""

    name: str
    distribution: str
    version: str
    error: str


@dataclass
class Component:
    kind: str
    name: str
    factory: Callable[[Any], Any]
    params: type | None
    provider: Provider
    description: str = ""
    prefix_param: str | None = None  # "timm:<model>" fills params.model with "<model>"


#: The ``plfw_resolve_weights`` hook as the registry calls it: (kind, name, weights) -> file.
WeightsHook = Callable[..., "Path | None"]


@dataclass
class Registry:
    """All registered components plus the clashes found while registering them.

    It is also the build context handed to factories that declare a ``registry`` parameter:
    a component that builds another one (the perceptual loss its network) or looks up weight
    files does so through the registry that is building it, not a process-wide singleton."""

    components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    conflicts: dict[tuple[str, str], list[Provider]] = field(default_factory=dict)
    failed: list[FailedPlugin] = field(default_factory=list)  # what `plfw plugins` reports
    weights_hook: WeightsHook | None = None  # set by plfw.core.plugins to plfw_resolve_weights

    def add(self, component: Component) -> None:
        table = self.components[component.kind]
        key = (component.kind, component.name)
        if key in self.conflicts:
            self.conflicts[key].append(component.provider)
        elif component.name in table:
            self.conflicts[key] = [table.pop(component.name).provider, component.provider]
        else:
            table[component.name] = component

    def names(self, kind: str) -> list[str]:
        return sorted(set(self.components[kind]) | {n for k, n in self.conflicts if k == kind})

    def get(self, kind: str, name: str) -> Component:
        if (kind, name) in self.conflicts:
            providers = " and ".join(str(p) for p in self.conflicts[(kind, name)])
            raise UserError(
                f"{kind} '{name}' is registered by more than one plugin: {providers}; "
                f"uninstall one or block it with PLFW_BLOCK_PLUGINS"
            )
        return self.resolve(kind, name)[0]

    def resolve(self, kind: str, name: str) -> tuple[Component, dict[str, Any]]:
        """The component for ``name`` plus params implied by a ``family:rest`` name."""
        if kind not in self.components:
            raise UserError(f"unknown component kind '{kind}'{suggest(kind, KINDS)}")
        table = self.components[kind]
        if name in table:
            return table[name], {}
        family, _, rest = name.partition(":")
        if rest and family in table and table[family].prefix_param:
            return table[family], {table[family].prefix_param: rest}  # type: ignore[dict-item]
        raise UserError(f"unknown {kind} '{name}'{suggest(name, self.names(kind))}")

    def build(self, kind: str, spec: Any, where: str = "") -> Any:
        """Validate ``spec`` ({name: ..., **params} or a bare name) and call the factory."""
        name, params = split_spec(spec, where or kind)
        if (kind, name) in self.conflicts:
            self.get(kind, name)
        component, implied = self.resolve(kind, name)
        clash = sorted(set(implied) & set(params))
        if clash:
            raise UserError(f"{where or kind}: '{name}' already sets {', '.join(clash)}; "
                            f"drop it from the parameters")
        params = validate_params(component, {**implied, **params}, where or kind)
        if takes_registry(component.factory):
            return component.factory(params, registry=self)
        return component.factory(params)

    def with_defaults(self, kind: str, spec: Any, **defaults: Any) -> dict[str, Any]:
        """``spec`` as a mapping, with params the user left out (e.g. ``scale``) filled from
        ``defaults`` when the component declares them (None values are skipped)."""
        name, params = split_spec(spec, kind)
        component = self.get(kind, name)
        fields = getattr(component.params, "__dataclass_fields__", {})
        for key, value in defaults.items():
            if key in fields and key not in params and value is not None:
                params[key] = value
        return {"name": name, **params}

    def resolve_weights(self, kind: str, name: str, weights: str) -> Path | None:
        """The installed plugins' answer to ``plfw_resolve_weights`` (None: no plugin knows)."""
        if self.weights_hook is None:
            return None
        found = self.weights_hook(kind=kind, name=name, weights=weights)
        return Path(found) if found is not None else None


def takes_registry(factory: Callable[..., Any]) -> bool:
    """Whether a factory declares a ``registry`` parameter (factory(params, registry=...))."""
    try:
        return "registry" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False


def split_spec(spec: Any, where: str) -> tuple[str, dict[str, Any]]:
    """Accept 'name' or {'name': ..., other params} (plain or omegaconf) and split it."""
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"{where}: expected a mapping with a 'name' key, got {spec!r}")
    params = dict(spec)
    return str(params.pop("name")), params


def validate_params(component: Component, params: dict[str, Any], where: str) -> Any:
    """Check ``params`` against the component's own dataclass; return an instance of it."""
    cls = component.params
    if cls is None:
        if params:
            raise UserError(f"{where}: {component.kind} '{component.name}' takes no parameters, "
                            f"got {', '.join(sorted(params))}")
        return None
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in valid:
            raise UserError(
                f"{where}: unknown parameter '{key}' for {component.kind} "
                f"'{component.name}'{suggest(key, valid)}"
            )
    try:
        merged = OmegaConf.structured(cls)
        for key, value in params.items():
            if isinstance(value, dict):
                merged[key] = value  # assignment replaces a mapping default; merge would blend
            else:
                merged = OmegaConf.merge(merged, {key: value})
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise UserError(f"{where}: {component.kind} '{component.name}' needs "
                            f"{', '.join(missing)}")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        msg = str(exc).splitlines()[0]
        raise UserError(f"{where}: bad parameter for {component.kind} '{component.name}': "
                        f"{msg}") from None


class Register:
    """Callable handed to a registration hook; binds the kind and the providing plugin."""

    def __init__(self, registry: Registry, kind: str, provider: Provider) -> None:
        self._registry, self.kind, self.provider = registry, kind, provider

    def __call__(self, name: str, factory: Callable[[Any], Any], params: type | None = None,
                 description: str = "", prefix_param: str | None = None) -> None:
        """Register one component. With ``prefix_param``, ``name:<value>`` also resolves to it,
        with ``<value>`` passed as that parameter (``timm:convnext_nano`` -> model)."""
        if params is not None and not dataclasses.is_dataclass(params):
            raise TypeError(f"{self.kind} '{name}': params must be a dataclass type")
        if prefix_param and prefix_param not in {f.name for f in dataclasses.fields(params)}:
            raise TypeError(f"{self.kind} '{name}': prefix_param '{prefix_param}' is not a field")
        self._registry.add(Component(self.kind, name, factory, params, self.provider,
                                     description, prefix_param))
