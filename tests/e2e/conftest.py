"""Fixtures for running the ``llmctl`` CLI as a user does, against both kinds of database."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from controller import cli
from gateway import schema as gateway_schema
from runtimestate import database
from runtimestate.desired import schema


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


@pytest.fixture
def llmctl(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``llmctl ARGS`` in-process against a fresh database; returns code, stdout, stderr."""
    monkeypatch.delenv("LLMCTL_SECRET_KEY", raising=False)
    monkeypatch.delenv("LLMCTL_SECRET_KEY_PREVIOUS", raising=False)
    runner = CliRunner()

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(
            cli.app, ["--database-url", database_url, *args], input=input, env=env
        )
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    # As a user starts: with a migrated database (commands that only read never create one).
    assert run("db", "upgrade").code == 0
    return run


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every llmctl table, for asserting that a command wrote nothing."""
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            if not inspector.has_table("backends"):
                return {}
            return {
                table.name: sorted(
                    tuple(str(value) for value in row)
                    for row in connection.execute(sa.select(table))
                )
                for table in [
                    *schema.metadata.sorted_tables,
                    *gateway_schema.metadata.sorted_tables,
                ]
            }
    finally:
        engine.dispose()
