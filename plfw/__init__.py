"""plfw: a plugin-based perceptual-loss training framework for single-image super-resolution.

This module is the public API, the one place a plugin author (built-in or third-party) imports
from: ``__all__`` lists everything a plugin may use; every other name in the package is internal
and may change. Heavy names (torch-based) are imported on first use, so ``import plfw`` stays
cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

from plfw.core.errors import PlfwWarning, UserError, suggest

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("plfw")

if TYPE_CHECKING:
    from plfw.core.commands import CommandRegister
    from plfw.core.registry import Register, Registry
    from plfw.evaluation.metrics import psnr_y, rgb_to_y, ssim_y
    from plfw.evaluation.stems import stem_candidates
    from plfw.imaging.images import (
        ImageError,
        list_images,
        load_image_uint8,
        probe_image,
        show_path,
    )
    from plfw.imaging.imresize import bicubic_downscale_uint8
    from plfw.imaging.imresize import imresize as matlab_imresize
    from plfw.nn.features import (
        CAFFE,
        IMAGENET,
        SIGNED,
        UNIT,
        InputSpec,
        TapExtractor,
        freeze,
        is_frozen,
    )
    from plfw.nn.fused import PReLU, prelu
    from plfw.nn.subpixel import conv_after_shuffle, subpixel_weight
    from plfw.nn.weights import (
        Hub,
        Packaged,
        Source,
        Unavailable,
        load_weights,
        offline,
        read_weights,
        resolve_weights,
    )
    from plfw.trainer import Trainer

#: public name -> the internal module that defines it (imported on first access)
_LAZY = {
    **dict.fromkeys(("Register", "Registry"), "plfw.core.registry"),
    "CommandRegister": "plfw.core.commands",
    "Trainer": "plfw.trainer",
    **dict.fromkeys(("InputSpec", "TapExtractor", "freeze", "is_frozen", "IMAGENET", "CAFFE",
                     "UNIT", "SIGNED"), "plfw.nn.features"),
    **dict.fromkeys(("resolve_weights", "read_weights", "load_weights", "offline", "Hub",
                     "Packaged", "Source", "Unavailable"), "plfw.nn.weights"),
    "bicubic_downscale_uint8": "plfw.imaging.imresize",
    **dict.fromkeys(("PReLU", "prelu"), "plfw.nn.fused"),
    **dict.fromkeys(("conv_after_shuffle", "subpixel_weight"), "plfw.nn.subpixel"),
    **dict.fromkeys(("psnr_y", "ssim_y", "rgb_to_y"), "plfw.evaluation.metrics"),
    "stem_candidates": "plfw.evaluation.stems",
    **dict.fromkeys(("ImageError", "list_images", "load_image_uint8", "probe_image",
                     "show_path"), "plfw.imaging.images"),
}


#: public names that differ from the internal ones (``plfw.imaging.imresize`` is also a module name)
_RENAMED = {"matlab_imresize": ("plfw.imaging.imresize", "imresize")}


def __getattr__(name: str) -> Any:
    if name in _LAZY or name in _RENAMED:
        module, inner = _RENAMED.get(name, (_LAZY.get(name), name))
        value = getattr(importlib.import_module(module), inner)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'plfw' has no attribute '{name}'")


def load_registry() -> Registry:
    """The registry of this process's plugins (loaded on first use): what a script hands to
    :class:`plfw.Trainer` and the other builders, as ``plfw train`` does."""
    from plfw.core.plugins import get_plugins

    return get_plugins().registry


def build(kind: str, spec: Any, where: str = "") -> Any:
    """Build a registered component from 'name' or {'name': ..., **params} with the plugins
    of this process. A factory building a nested component uses the ``registry`` it was given
    instead (``registry.build(...)``)."""
    return load_registry().build(kind, spec, where)


def list_components(kind: str) -> list[str]:
    """Names of the registered components of one kind."""
    return load_registry().names(kind)


__all__ = [
    "CAFFE",
    "CommandRegister",
    "IMAGENET",
    "SIGNED",
    "UNIT",
    "Hub",
    "ImageError",
    "InputSpec",
    "PReLU",
    "Packaged",
    "PlfwWarning",
    "Register",
    "Registry",
    "Source",
    "TapExtractor",
    "Trainer",
    "Unavailable",
    "UserError",
    "__version__",
    "bicubic_downscale_uint8",
    "build",
    "conv_after_shuffle",
    "freeze",
    "hookimpl",
    "is_frozen",
    "list_images",
    "list_components",
    "load_registry",
    "load_image_uint8",
    "load_weights",
    "matlab_imresize",
    "offline",
    "prelu",
    "probe_image",
    "psnr_y",
    "read_weights",
    "resolve_weights",
    "rgb_to_y",
    "show_path",
    "ssim_y",
    "stem_candidates",
    "subpixel_weight",
    "suggest",
]
