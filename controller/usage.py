"""Usage errors that stay readable: click's own messages with every long value cut.

Click and typer word the errors of the command line itself (a choice not offered, an unknown
option, an extra argument) and repeat the value in full: a 20 MB ``--policy`` made a 20 MB
message. `Root`, the class of the root app (set by `controller.cli`), catches those errors on
their way out of parsing and invoking, and replaces each long command-line value in the message
by `runtimestate.echo.plain` of it, as every llmctl message does. Typer still prints the error
and exits 2 (without any style under ``NO_COLOR``: `controller.terminal`).

Before parsing, `controller.rootoptions.hoist` moves the global options given after the
subcommand to where click reads them, and a shell's completion request gets the answer format
of `controller.completion`'s scripts; nothing else about parsing changes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from controller import completion, helptext, rootoptions, terminal
from runtimestate import echo


def long_values(args: Sequence[str]) -> list[str]:
    """The command-line values longer than `echo.LIMIT`, longest first: whole arguments and
    the value of a ``--name=value`` argument."""
    found: set[str] = set()
    for arg in args:
        found.add(arg)
        if arg.startswith("-") and "=" in arg:
            found.add(arg.split("=", 1)[1])
    return sorted((a for a in found if len(a) > echo.LIMIT), key=len, reverse=True)


def cut(message: str, args: Sequence[str]) -> str:
    """``message`` with each long value of ``args`` in it replaced by its cut form."""
    for value in long_values(args):
        if value in message:
            message = message.replace(value, echo.plain(value))
    return message


class Root(helptext.Group):
    """The root group: help rendered as `helptext.Group` does, usage errors cut."""

    def main(self, args: Sequence[str] | None = None, *posargs: Any, **kwargs: Any) -> Any:
        self._args = list(sys.argv[1:] if args is None else args)
        if os.environ.get(completion.COMPLETE_VAR):  # a shell asks: answer as its script reads
            completion.register()
        if terminal.no_color():  # typer's help and usage errors: rich keeps bold under NO_COLOR
            from typer import rich_utils

            rich_utils.COLOR_SYSTEM = terminal.color_system()
        return super().main(args, *posargs, **kwargs)

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        args = rootoptions.hoist(self, args)  # global options after the subcommand too
        try:
            return super().make_context(info_name, args, parent, **extra)
        except typer.TyperException as exc:  # click's errors (typer vendors click)
            self._cut(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.TyperException as exc:  # click's errors (typer vendors click)
            self._cut(exc)
            raise

    def _cut(self, exc: typer.TyperException) -> None:
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            exc.message = cut(message, getattr(self, "_args", ()))
