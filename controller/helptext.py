"""How ``llmctl --help`` names the values options and arguments take.

Typer shows Python types where a user expects a placeholder: ``--json <bool>``,
``--label <list[str]>``, ``--timeout <float range>``, and a required argument as ``{name}`` in the
usage line. `Group`, the class of the root app (set by `controller.cli`), renders them as click
and kubectl do: nothing after a flag, ``TEXT``, ``INTEGER``, ``FLOAT``, ``FILE``, ``[a|b|c]``
for choices, and arguments as ``NAME`` (``[NAME]`` when optional). It reaches every command
through `Group.get_command`, the only way click finds a subcommand, and every parameter
(``--help`` too) through ``get_params``, so no command needs to name it. Only the rendering
of help changes; parsing, defaults and errors are typer's.
"""

from __future__ import annotations

from typing import Any

from typer import core

_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "file": "FILE",
    "path": "PATH",
    "directory": "DIRECTORY",
    "datetime": "DATETIME",
}


def metavar(typer_type: str) -> str:
    """Typer's type label (``<list[str]>``, ``<float range>``, ``<a|b>``) as a placeholder
    (``TEXT``, ``FLOAT``, ``[a|b]``)."""
    inner = typer_type.strip().removesuffix("...").removeprefix("<").removesuffix(">")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list[") : -1]  # repeatable: the help says so
    inner = inner.removesuffix(" range")  # typer adds the range itself, as [x>=0]
    if "|" in inner:
        return f"[{inner}]"
    return _NAMES.get(inner, inner.upper())


class Option(core.TyperOption):
    """An option whose help shows a placeholder, and nothing for a flag."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return metavar(self.display_type(ctx))


class Argument(core.TyperArgument):
    """An argument shown as ``NAME`` in the usage line and the help table."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return metavar(self.display_type(ctx))

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def polish(command: Any) -> Any:
    """Make ``command`` (a typer command or group) render its help as above; returns it.

    Idempotent. The classes here only add rendering methods, so swapping an instance's class
    keeps its state: typer builds the commands and parameters and takes no class for the
    parameters it adds itself (``--help``, the completion options)."""
    if isinstance(command, core.TyperGroup):
        command.__class__ = Group
    elif isinstance(command, core.TyperCommand):
        command.__class__ = Command
    return command


def _polish_params(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, core.TyperArgument):
            param.__class__ = Argument
        elif isinstance(param, core.TyperOption):
            param.__class__ = Option
    return params


class Command(core.TyperCommand):
    """A command whose parameters, ``--help`` included, render as above."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _polish_params(super().get_params(ctx))


class Group(core.TyperGroup):
    """A group whose parameters and subcommands render as above; the root app's class."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _polish_params(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else polish(command)
