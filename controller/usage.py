"""The root command group: commands loaded on first use, and usage errors that stay readable.

`Root`, the class of the root app (set by `controller.cli`), does two things besides what
`helptext.Group` renders:

- **Lazy commands.** Each top-level command is a `Lazy` entry (the module and attribute that
  define it, and its one-line help); its module is imported only when the command runs or its
  own help is asked for. ``llmctl --help`` lists the entries without importing any of them, so
  it starts without a database driver, NATS or HTTP client; `Root.get_command` imports exactly
  one command module. Every loaded command configures CLI logging just before its body runs
  (never for ``--help``): structlog is a good part of start-up.
- **Cut usage errors.** Click and typer word the errors of the command line itself (a choice not
  offered, an unknown option, an extra argument) and repeat the value in full: a 20 MB
  ``--policy`` made a 20 MB message. `Root` catches those errors on their way out of parsing and
  invoking and replaces each long command-line value in the message by
  `runtimestate.echo.plain` of it, as every llmctl message does. Typer still prints the error
  and exits 2 (plain text: the root renders help and errors without rich).

Before parsing, `controller.rootoptions.hoist` moves the global options given after the
subcommand to where click reads them, and a shell's completion request gets the answer format
of `controller.completion`'s scripts; nothing else about parsing changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import typer
from typer import core

from controller import completion, helptext, rootoptions
from runtimestate import echo


@dataclasses.dataclass(frozen=True)
class Lazy:
    """A top-level command defined by ``target`` (``module:attribute``, a `typer.Typer` or a
    command function), shown in ``llmctl --help`` as ``help`` under ``panel``."""

    target: str
    help: str
    panel: str = "Commands"

    def placeholder(self, name: str) -> core.TyperCommand:
        """What ``--help`` lists for the command: its name and help, nothing imported."""
        command = core.TyperCommand(name, help=self.help)
        command.rich_help_panel = self.panel
        return command

    def load(self, name: str) -> Any:
        """Import the command's module and build its click command (a group keeps its
        subcommands even when it has only one, as it would under ``add_typer``)."""
        module, _, attribute = self.target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        holder = typer.Typer(add_completion=False)
        holder.callback()(lambda: None)  # a group, so typer never flattens the command
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name)(target)
        command = typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]
        command.help = command.help or self.help
        command.rich_help_panel = self.panel
        _log_before_running(command)
        return command


def _log_before_running(command: Any) -> None:
    """Wrap the body of ``command`` and of every command under it so that CLI logging is
    configured just before the body runs; render their help as plain text, as the root's."""
    for sub in getattr(command, "commands", {}).values():
        _log_before_running(sub)
    command.rich_markup_mode = None
    if command.callback is not None:
        command.callback = _logging_first(command.callback)


def _logging_first(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        from controller import logs

        logs.configure_cli()
        return body(*args, **kwargs)

    return run


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
    """The root group: help rendered as `helptext.Group` does, `lazy` commands loaded on first
    use, usage errors cut. A subclass sets `lazy` (`controller.cli` does)."""

    lazy: ClassVar[Mapping[str, Lazy]] = {}
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        loaded = super().list_commands(ctx)
        return [*loaded, *(name for name in self.lazy if name not in loaded)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        entry = self.lazy.get(cmd_name)
        if entry is not None and cmd_name not in self.commands:
            if self._listing:
                return entry.placeholder(cmd_name)
            self.commands[cmd_name] = entry.load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:  # typer suggests among loaded commands only
            message = getattr(exc, "message", None)
            if isinstance(message, str) and args and "Did you mean" not in message:
                close = difflib.get_close_matches(args[0], self.list_commands(ctx))
                if close:
                    exc.message = f"{message.rstrip('.')}. Did you mean {close[0]!r}?"
            raise

    def load_all(self) -> Root:
        """Load every lazy command (for tools that walk the whole tree, like the help tests);
        returns the group."""
        for name in self.lazy:
            self.get_command(None, name)
        return self

    @contextlib.contextmanager
    def _placeholders(self) -> Iterator[None]:
        """Within the block, commands not loaded yet are listed by their placeholders."""
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self._placeholders():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        with self._placeholders():
            return super().shell_complete(ctx, incomplete)

    def main(self, args: Sequence[str] | None = None, *posargs: Any, **kwargs: Any) -> Any:
        self._args = list(sys.argv[1:] if args is None else args)
        if os.environ.get(completion.COMPLETE_VAR):  # a shell asks: answer as its script reads
            completion.register()
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
            # Typer checks choices with pydantic, whose "Value error, " says nothing to a user.
            message = message.removeprefix("Value error, ")
            exc.message = cut(message, getattr(self, "_args", ()))
