"""Every ``llmctl ... --help`` read as a user reads it: placeholders, not Python types or markup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from controller import cli, helptext


def _paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*path, name))


COMMANDS = list(_paths(typer.main.get_command(cli.app).load_all()))  # type: ignore[attr-defined]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(
        cli.app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_the_command_tree_is_walked_whole() -> None:
    assert ("backend", "add") in COMMANDS
    assert ("downloads", "list") in COMMANDS
    assert ("emulate", "vllm") in COMMANDS
    assert len(COMMANDS) > 35


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(("llmctl", *p)))
def test_help_shows_placeholders_not_python_types_braces_or_markup(path: tuple[str, ...]) -> None:
    text = _help(path)
    assert re.findall(r"<[a-z][a-z_\[\]| ]*>", text) == []  # <bool>, <list[str]>, <str>
    assert re.findall(r"\{[a-z_]+\}", text) == []  # {name} in the usage line
    assert "``" not in text  # raw reST
    assert "`" not in text  # raw markdown
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert usage.split("Usage: ", 1)[1].startswith(" ".join(("llmctl", *path)))


_OUTPUT = re.compile(r"-o, --output \[([a-z|]+)\]\s+(.*?)\s*(?:\[default|\n\s*-|\n\n|$)", re.S)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(("llmctl", *p)))
def test_output_choices_agree_with_their_help_text(path: tuple[str, ...]) -> None:
    text = _help(path)
    found = _OUTPUT.search(text)
    assert (found is None) == ("--output" not in text), text
    if found is not None:
        choices = set(found.group(1).split("|"))
        described = set(re.findall(r"[a-z]+", found.group(2))) - {"or", "default"}
        assert choices == described, found.group(0)


def test_the_output_help_of_a_list_is_read_whole() -> None:
    found = _OUTPUT.search(_help(("backend", "list")))
    assert found is not None
    assert found.group(1) == "table|wide|json|yaml|name"
    assert found.group(2) == "table, wide, json, yaml or name"


def test_output_refuses_a_choice_a_command_does_not_offer() -> None:
    result = CliRunner().invoke(cli.app, ["reconcile", "--once", "-o", "wide"])
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())
    assert "'wide' is not one of 'table', 'json', 'yaml'" in message
    assert "Value error" not in message  # pydantic's wording, which typer passes on


@pytest.mark.parametrize(
    ("typer_type", "shown"),
    [
        ("<bool>", "BOOL"),
        ("<str>", "TEXT"),
        ("<list[str]>", "TEXT"),
        ("<int range>", "INTEGER"),
        ("<float range>", "FLOAT"),
        ("<file>", "FILE"),
        ("<table|json|yaml>", "[table|json|yaml]"),
        ("<list[ollama|vllm]>", "[ollama|vllm]"),
    ],
)
def test_typer_types_become_placeholders(typer_type: str, shown: str) -> None:
    assert helptext.metavar(typer_type) == shown


def test_a_mistyped_command_gets_the_close_one_suggested_before_any_is_loaded() -> None:
    result = CliRunner().invoke(cli.app, ["bakend", "list"])
    assert result.exit_code == 2
    assert "No such command 'bakend'. Did you mean 'backend'?" in result.output


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_the_root_help_says_what_each_command_says_of_itself(name: str) -> None:
    root = typer.main.get_command(cli.app)
    command = root.get_command(None, name)  # type: ignore[arg-type]
    listed = " ".join(cli.COMMANDS[name].help.split())
    assert " ".join((command.help or "").split()).startswith(listed)
    assert f"  {name}  " in _help(()).replace(" " * 3, "  ")
