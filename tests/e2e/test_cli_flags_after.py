"""kubectl's habit: the global options and ``-o`` work after the subcommand and its arguments."""

from __future__ import annotations

import pathlib

import pytest
from typer.testing import CliRunner

from controller import cli
from tests.e2e import test_cli_downloads as seed
from tests.e2e.conftest import Cli, Result


def bare(*args: str) -> Result:
    """``llmctl ARGS`` exactly as given: no ``--database-url`` put in front."""
    result = CliRunner().invoke(cli.app, list(args), env={"LLMCTL_DATABASE_URL": None})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize(
    "line",
    [
        ["backend", "list", "-o", "json", "--database-url", "{url}"],
        ["backend", "list", "--database-url={url}", "-o", "json"],
        ["backend", "--database-url={url}", "list", "-o", "json"],
        ["backend", "--database-url", "{url}", "list", "-o", "json"],
    ],
    ids=["after-list", "after-list-with-equals", "between-with-equals", "between"],
)
def test_database_url_after_the_subcommand_reads_that_database(
    llmctl: Cli, database_url: str, line: list[str]
) -> None:
    assert llmctl("backend", "add", "gpu-1", "--url", "http://h:1", "--type", "ollama").code == 0
    result = bare(*[token.replace("{url}", database_url) for token in line])
    assert result.code == 0, result.err
    assert [b["name"] for b in result.json()] == ["gpu-1"]


def test_a_global_option_given_before_and_after_the_subcommand_takes_the_later(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    assert llmctl("model", "add", "llama3").code == 0
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    later_good = bare("--database-url", missing, "model", "list", "-o", "json",
                      "--database-url", database_url)  # fmt: skip
    assert later_good.code == 0, later_good.err
    assert [m["name"] for m in later_good.json()] == ["llama3"]
    later_missing = bare("--database-url", database_url, "model", "list",
                         "--database-url", missing)  # fmt: skip
    assert later_missing.code == 2
    assert "missing.db" in later_missing.err


def test_a_declaring_command_writes_to_the_database_named_after_its_options(
    llmctl: Cli, database_url: str
) -> None:
    added = bare("pool", "create", "gpu", "--purpose", "big", "--database-url", database_url)
    assert added.code == 0, added.err
    assert llmctl("pool", "get", "gpu", "-o", "json").json()["purpose"] == "big"


def test_a_global_option_that_is_the_value_of_another_option_stays_that_value(
    llmctl: Cli, database_url: str
) -> None:
    result = bare("--database-url", database_url, "backend", "add", "gpu-1", "--url",
                  "http://h:1", "--type", "ollama", "--label", "--database-url")  # fmt: skip
    assert result.code == 2
    assert "'--database-url' is not of the form key=value" in result.err
    assert llmctl("backend", "list", "-o", "json").json() == []


def test_every_get_and_list_takes_o_after_its_arguments(llmctl: Cli, database_url: str) -> None:
    assert llmctl("backend", "add", "gpu-1", "--url", "http://h:1", "--type", "ollama").code == 0
    assert llmctl("model", "add", "llama3").code == 0
    job = seed.enqueue(database_url, "gpu-1", "llama3")
    named = {
        ("backend", "get", "gpu-1"): "gpu-1",
        ("model", "get", "llama3"): "llama3",
        ("pool", "get", "default"): "default",
        ("downloads", "get", job.id): job.id,
    }
    for words, name in named.items():
        result = llmctl(*words, "-o", "json")
        assert result.code == 0, (words, result.err)
        assert name in (result.json().get("name"), result.json().get("id")), words
    for group in ("backend", "model", "pool", "downloads"):
        listed = llmctl(group, "list", "-o", "yaml")
        assert listed.code == 0, (group, listed.err)
        assert listed.out.startswith("- "), group
