"""The plugin contract: every hook plfw calls, with its signature and meaning.

A plugin is a module (or object) with functions decorated by ``plfw.hookimpl`` whose names match
the specs below. It is found through the ``plfw`` entry-point group, exactly as the built-ins are.

Registration hooks receive a :class:`plfw.Register` bound to one component kind and call
it once per component: ``register(name, factory, params)``. ``params`` is a dataclass; the config's
keys for that component are validated against it and the factory is called with one instance of
it holding plain Python values; a factory that also declares a ``registry`` parameter gets the
:class:`plfw.Registry` building it (to build nested components and resolve weights with it).
Registration hooks return nothing, so registry contents never depend on the order pluggy calls
them in. Everything a plugin needs is in ``plfw.__all__``.

Lifecycle events (train start, step end, validation end, train end) reach plugins one way: as
callbacks a config lists by name (``plfw_register_callbacks``). There are no lifecycle hooks, so
what a run does depends on its config, not on which packages happen to be installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # the names plugins see; imported for type checkers only
    from plfw import CommandRegister, Register

hookspec = pluggy.HookspecMarker("plfw")


@hookspec
def plfw_register_generators(register: Register) -> None:
    """Register generators: factory(params) -> nn.Module mapping LR [0, 1] to SR.

    The module has ``scale: int`` and ``output_range: tuple[float, float]`` (the range its output
    and pixel targets live in; the paper's SRResNet uses (-1, 1)).

    Optional, for opening foreign weights (``plfw upscale weights.pth``): the factory may carry
    ``factory.from_state_dict(state) -> (spec, state) | None``. Given a plain state dict it
    returns the spec that rebuilds this architecture (name, scale and shape params read from the
    tensor names and shapes) and the state dict renamed to this module's keys, or None when the
    keys are not this architecture's; it raises ``UserError`` for keys that are its own with
    shapes no such network has. Factories are asked in name order; the first answer wins.
    Optional too: ``forward(lr, keep)`` with ``accepts_keep = True`` computes only the SR of
    the LR region ``keep`` = (top, left, height, width), which tiled upscaling uses."""


@hookspec
def plfw_register_discriminators(register: Register) -> None:
    """Register discriminators: factory(params) -> nn.Module mapping an image batch in the
    generator's output range to one logit per image, shape (N,) or (N, 1), or to a map of
    logits (N, 1, h, w), one per pixel or patch (the adversarial losses average over all).
    An ``input_size`` param, where declared, is filled in with the HR crop size."""


@hookspec
def plfw_register_feature_extractors(register: Register) -> None:
    """Register loss networks: factory(params) -> nn.Module with ``taps: tuple[str, ...]`` and
    ``input_spec: plfw.nn.features.InputSpec``. Its forward takes images already converted to
    ``input_spec`` and returns ``dict[tap, Tensor]``. It must be frozen with
    ``plfw.nn.features.freeze``."""


@hookspec
def plfw_register_losses(register: Register) -> None:
    """Register losses: factory(params) -> nn.Module. Pixel and feature losses are called as
    ``loss(sr, hr)`` on images in the generator's output range and return a scalar (a loss with
    ``needs_ema = True`` is called as ``loss(sr, hr, ema_sr=...)`` with the EMA generator's
    output for the same batch, and needs ``train.ema > 0``); before
    training the trainer calls ``loss.set_image_range(lo, hi)`` when the loss defines it (a loss
    network needs [0, 1] images) and ``loss.calibrate(hr)`` with a batch of HR images in that range
    when it defines that. A loss with ``adversarial = True`` instead provides
    ``generator_loss(real_logits, fake_logits)`` and ``discriminator_loss(real_logits,
    fake_logits)``."""


@hookspec
def plfw_register_datasets(register: Register) -> None:
    """Register datasets: factory(params) -> torch Dataset of ``(lr, hr)`` float tensors in [0, 1],
    CHW, RGB, with ``hr`` exactly ``scale`` times ``lr`` in both sides."""


@hookspec
def plfw_register_metrics(register: Register) -> None:
    """Register metrics: factory(params) -> callable(sr, hr) -> float on single images in [0, 1]
    (CHW); attributes ``higher_is_better: bool`` and ``networks: tuple[str, ...]`` (the feature
    extractors whose weights it uses, so a run is never scored by a network it trained with).
    Optional: ``label`` (a table heading, e.g. 'PSNR-Y [dB]'; default the name) and ``format``
    (e.g. '{:.2f}'; default four decimals). A ``border`` param is filled in with the scale."""


@hookspec
def plfw_register_callbacks(register: Register) -> None:
    """Register callbacks: factory(params) -> object with any of ``on_train_start(trainer)``,
    ``on_step_end(trainer, step, logs)``, ``on_validation_end(trainer, step, metrics)``,
    ``on_train_end(trainer)``. Selected by name in the config's ``callbacks`` list."""


@hookspec(firstresult=True)
def plfw_resolve_weights(kind: str, name: str, weights: str) -> Path | None:
    """Return a local file holding weights ``weights`` for component ``name`` of ``kind``, or
    None to let the next plugin (and finally the component itself) decide. The first non-None
    answer wins: this is how an offline machine points plfw at files it already has."""


@hookspec
def plfw_register_commands(register: CommandRegister) -> None:
    """Register subcommands of ``plfw``: ``register(name, run, help=...)`` adds ``plfw NAME``
    and returns its ``argparse.ArgumentParser`` for the plugin to add arguments to; ``plfw NAME
    ...`` then calls ``run(args, registry)`` with the parsed arguments and the command's
    :class:`plfw.Registry`, and exits with its return value (None: 0). Raise ``UserError`` for a
    user's mistake: it is printed as one line. ``bench``, ``ablate`` and ``mos`` come this way."""
