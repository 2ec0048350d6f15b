"""Each command imports only what it uses: the start-up time of the CLI cannot quietly come back.

Every case runs the real CLI in a fresh interpreter and reads ``sys.modules`` when the command
is done, so the answer is deterministic (no timing). Help imports no database driver, NATS or
HTTP client; a read or a write of the desired state imports the database layer and nothing of
the cycle, the adapters, the download worker, the resolver or NATS.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

_PROBE = """
import contextlib, io, json, sys
sys.argv = ["llmctl", *json.loads(sys.argv[1])]
from controller import cli
code = 0
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""

DRIVERS = {"sqlalchemy", "aiosqlite", "sqlite3", "psycopg", "asyncpg", "alembic"}
CLIENTS = {"nats", "aiohttp", "httpx", "ollama"}
# What a command that reads or writes the desired state must not import.
CYCLE = {
    "migrations.env",
    "controller.settings",
    "controller.composition",
    "controller.natsconnection",
    "runtimestate.state",
    "runtimestate.backends",
    "runtimestate.downloads",
    "runtimestate.resolver",
    "runtimestate.reconcile.cycle",
    "runtimestate.reconcile.observation",
    "runtimestate.reconcile.plan",
    "runtimestate.reconcile.execution",
    "runtimestate.reconcile.probing",
    "apscheduler",
    "pydantic_settings",
}


def _imports(args: list[str], data_dir: pathlib.Path, database_url: str) -> set[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "LLMCTL_DATA_DIR": str(data_dir),  # no embedded NATS announced there
        "LLMCTL_DATABASE_URL": database_url,
        "HOME": str(data_dir),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, (args, done.stderr)
    return set(result["modules"])


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def _under(modules: set[str], packages: set[str]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    data_dir = tmp_path_factory.mktemp("imports")
    url = f"sqlite:///{data_dir / 'llmctl.db'}"
    _imports(["db", "upgrade"], data_dir, url)
    _imports(
        ["backend", "add", "gpu-1", "--url", "http://h:11434", "--type", "ollama"], data_dir, url
    )
    _imports(["model", "add", "qwen2"], data_dir, url)  # the base model of an adapter
    return data_dir, url


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["backend", "--help"],
        ["watch", "--help"],
        ["downloads", "--help"],
        ["node", "serve", "--help"],
        ["adapter", "--help"],
        ["gateway", "--help"],
    ],
)
def test_help_imports_no_database_driver_nats_or_http_client(
    args: list[str], database: tuple[pathlib.Path, str]
) -> None:
    modules = _imports(args, *database)
    assert _top(modules) & (DRIVERS | CLIENTS | {"opentelemetry"}) == set()
    assert _under(modules, CYCLE | {"migrations", "runtimestate.database"}) == set()


_GATEWAY_PROBE = """
import json, sys
from controller import gatewayobservers
from gateway import application
from runtimestate import resolver, snapshot
r = resolver.Resolver.from_snapshot(snapshot.Snapshot({}))
watch = gatewayobservers.build(
    r, request_log=True, exporters=gatewayobservers.traces(sys.argv[1])
)
application.build(r, observers=watch.observers, metrics=watch.metrics)
watch.close()
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize(("traces", "imported"), [("none", False), ("console", True)])
def test_the_gateway_imports_opentelemetry_only_when_tracing_is_on(
    traces: str, imported: bool
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _GATEWAY_PROBE, traces],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert ("opentelemetry" in _top(modules)) is imported


def test_the_root_help_imports_no_command_module(database: tuple[pathlib.Path, str]) -> None:
    modules = _imports(["--help"], *database)
    loaded = {m for m in modules if m.startswith("controller.")}
    assert loaded <= {"controller.cli", "controller.usage", "controller.helptext"} | {
        "controller.runner",
        "controller.datadir",
        "controller.terminal",
        "controller.completion",
        "controller.rootoptions",
        "controller.natsoptions",  # the root's NATS credential flags
    }


@pytest.mark.parametrize(
    "args",
    [
        ["backend", "list"],
        ["backend", "list", "-o", "json"],
        ["downloads", "list"],
        ["model", "add", "llama3"],
        ["model", "list"],
        ["pool", "list"],
        ["adapter", "list"],
        ["adapter", "add", "sql-lora", "--base-model", "qwen2", "--source", "/a/sql"],
    ],
)
def test_commands_on_the_desired_state_import_the_database_layer_and_nothing_of_the_cycle(
    args: list[str], database: tuple[pathlib.Path, str]
) -> None:
    modules = _imports(args, *database)
    assert {"sqlalchemy", "aiosqlite"} <= _top(modules)  # the probe sees what a command uses
    assert _top(modules) & CLIENTS == set()
    assert "alembic" not in _top(modules)  # the schema check reads one row, never Alembic
    assert _under(modules, CYCLE) == set()
