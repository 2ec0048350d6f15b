"""The root's options wherever they are given: ``llmctl backend list --database-url URL``.

kubectl takes its global flags anywhere on the line; click takes the root's options only
before the first command word. `hoist` moves each global option found after it (``--opt value``
and ``--opt=value``) to just before that word, where click parses it, so a global option given
twice keeps click's rule: the later one wins. It moves a token only when it is exactly a global
option's name or starts with ``name=``, and walks the command path as click would, so it never
moves the value of another option (``--label --database-url`` keeps its label), an option of
the same name that a command defines itself, or anything after a ``--``.

Called by `controller.usage.Root` before click parses (for running and for shell completion
alike). It reads the command tree through ``get_command`` and never changes it; it must not
import anything heavier than typer's vendored click.
"""

from __future__ import annotations

from collections.abc import Sequence

from typer import _click as click
from typer import core

GLOBAL = (
    "--database-url",
    "--nats-url",
    "--subject-prefix",
    "--nats-creds",
    "--nats-nkey",
    "--nats-user",
    "--nats-password-file",
    "--nats-token-file",
    "--nats-ca",
    "--nats-cert",
    "--nats-key",
)
END = "--"  # click's end of options: what follows is arguments only


def is_global(token: str) -> bool:
    """Whether ``token`` is a global option: its exact name or ``name=value``."""
    return any(token == name or token.startswith(f"{name}=") for name in GLOBAL)


def hoist(root: core.TyperGroup, args: Sequence[str]) -> list[str]:
    """``args`` with every global option after the first command word moved before it;
    unchanged when there is none (the usual case costs one scan of the line)."""
    args = list(args)
    if not any(is_global(token) for token in args):
        return args
    start = _first_command_word(root, args)
    if start is None or not any(is_global(token) for token in args[start + 1 :]):
        return args
    ctx = click.Context(root, resilient_parsing=True)
    moved, kept = _split(ctx, root.get_command(ctx, args[start]), args[start + 1 :])
    return [*args[:start], *moved, args[start], *kept]


def _first_command_word(root: click.Command, args: list[str]) -> int | None:
    valued = _valued_options(root)
    index = 0
    while index < len(args):
        token = args[index]
        if token == END:
            return None
        if not _is_option(token):
            return index
        index += 1 + valued.get(token, 0)
    return None


def _split(
    ctx: click.Context, command: click.Command | None, rest: list[str]
) -> tuple[list[str], list[str]]:
    """The global options of ``rest`` (with their values) and everything else, in order."""
    moved: list[str] = []
    kept: list[str] = []
    valued = _valued_options(command)
    index = 0
    while index < len(rest):
        token = rest[index]
        taken = 1
        if token == END:
            kept.extend(rest[index:])
            break
        if _is_option(token) and is_global(token) and token.split("=", 1)[0] not in valued:
            taken += 0 if "=" in token else 1
            if index + taken > len(rest):  # moved alone, it would take the command word
                raise click.exceptions.BadOptionUsage(
                    token, f"Option '{token}' requires an argument."
                )
            moved.extend(rest[index : index + taken])
            index += taken
            continue
        if _is_option(token):
            taken += _values_taken(token, valued)
        elif isinstance(command, core.TyperGroup):  # the subcommand's name: its options from here
            command = command.get_command(ctx, token)
            valued = _valued_options(command)
        kept.extend(rest[index : index + taken])
        index += taken
    return moved, kept


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1


def _values_taken(token: str, valued: dict[str, int]) -> int:
    """How many of the following tokens the option ``token`` consumes, as click parses it:
    ``--name value`` one, ``--name=value`` none, ``-xo value`` one when ``-o`` takes a value
    and ends the cluster, ``-ovalue`` none."""
    if token.startswith("--") or token in valued:
        return 0 if "=" in token else valued.get(token, 0)
    for position, char in enumerate(token[1:], start=2):
        needs = valued.get(f"-{char}", 0)
        if needs:
            return needs if position == len(token) else needs - 1
    return 0


def _valued_options(command: click.Command | None) -> dict[str, int]:
    """Each option name of ``command`` that takes values, with how many it takes."""
    if command is None:
        return {}
    found: dict[str, int] = {}
    for param in command.params:
        if isinstance(param, core.TyperOption) and not (param.is_flag or param.count):
            for name in param.opts:
                found[name] = param.nargs
    return found
