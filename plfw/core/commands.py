"""Subcommands as plugins: what ``plfw_register_commands`` hands a plugin.

The core's own commands (``train``, ``resume``, ``eval``, ``upscale``, ``export``, ``plugins``)
and the research tools that ship with plfw (``bench``, ``ablate``, ``mos``) are added through
the same :class:`CommandRegister` as a third party's, so a package can add ``plfw mycommand``
exactly as the built-ins do (``docs/plugins.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from plfw.core.errors import UserError
from plfw.core.registry import Provider, Registry

#: a command's body: (parsed arguments, the command's registry) -> exit status (None: 0)
Run = Callable[[argparse.Namespace, Registry], "int | None"]


class CommandRegister:
    """``register(name, run, help="", **parser_options)`` adds ``plfw NAME`` and returns its
    ``argparse.ArgumentParser`` (for the plugin's arguments); ``run(args, registry)`` runs it.
    A name taken by another plugin is refused, naming both."""

    def __init__(self, subparsers: Any, provider: Provider,
                 owners: dict[str, Provider] | None = None) -> None:
        self._subparsers, self.provider = subparsers, provider
        self.owners: dict[str, Provider] = {} if owners is None else owners
        self.parsers: dict[str, argparse.ArgumentParser] = {}  # what this provider added

    def __call__(self, name: str, run: Run, help: str = "",
                 **parser_options: Any) -> argparse.ArgumentParser:
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise UserError(f"command name {name!r} from {self.provider}: use one word")
        if name in self.owners:
            raise UserError(f"command '{name}' is registered by {self.owners[name]} and again "
                            f"by {self.provider}; uninstall one of them")
        if not callable(run):
            raise UserError(f"command '{name}' from {self.provider}: run must be callable")
        self.owners[name] = self.provider
        parser = self._subparsers.add_parser(name, help=help, **parser_options)
        parser.set_defaults(plfw_run=run, command=name)
        self.parsers[name] = parser
        return parser

    def disable(self, error: str) -> None:
        """After this provider's hook raised: its commands, perhaps half set up, refuse to run
        and say why (argparse cannot take a subcommand back)."""
        def refuse(args: argparse.Namespace, registry: Registry) -> int:
            raise UserError(f"command '{args.command}' from {self.provider} failed to register "
                            f"({error}); fix or uninstall that plugin")

        for parser in self.parsers.values():
            parser.set_defaults(plfw_run=refuse)

    def for_provider(self, provider: Provider) -> CommandRegister:
        """The same register, for the next plugin (sharing who owns which name)."""
        return CommandRegister(self._subparsers, provider, self.owners)
