"""Root fixtures: real Postgres and NATS servers, started lazily and always torn down.

A server starts the first time a test asks for it and lives for the session; tests that stop or
kill a server use the `fresh_*` fixtures and get their own. Tests that use Postgres or NATS are
marked `postgres` / `nats` automatically, so `-m "not postgres"` deselects them. A server that
cannot be provisioned makes its tests error with the reason (`ServiceUnavailable`): never a skip.

Fixtures:
- `postgres_server` (session): `LLMCTL_TEST_DATABASE_URL` if set, else a throwaway cluster.
- `postgres_url`: a fresh empty database on it, as a plain `postgresql://` URL; dropped after.
- `sqlite_url`: a plain `sqlite:///` URL of a file in the test's tmp_path.
- `database_url`: parametrized `sqlite` / `postgres`, one of the two above.
- `fresh_postgres_server`: a throwaway cluster of the test's own, to stop and start at will.
- `nats_server` (session) and `nats_url`: a shared JetStream-enabled NATS server.
- `nats_prefix`: a subject prefix unique to the test (`t<hex>`), for isolation on that server.
- `fresh_nats_server`: a NATS server of the test's own, to stop and start at will.
- `secure_nats` (session): secured NATS servers (TLS, NKey, creds, password, token), each
  started on first use (tests/natssecure.py); do not stop them.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests import natssecure, services

EXTERNAL_DATABASE_ENV = "LLMCTL_TEST_DATABASE_URL"
POSTGRES_FIXTURES = frozenset({"postgres_server", "postgres_url", "fresh_postgres_server"})
NATS_FIXTURES = frozenset({"nats_server", "nats_url", "fresh_nats_server", "secure_nats"})


def pytest_configure() -> None:
    # The public registry and hub are not part of any test: a CLI or `serve` a test runs checks
    # upstream for upgrades (issue 19) only when the test points it at an emulator and sets this.
    os.environ.setdefault("LLMCTL_UPGRADE_CHECK_INTERVAL_S", "0")
    # pytest tears fixtures down on Ctrl-C but dies on SIGTERM (what CI sends on a timeout);
    # treating SIGTERM like Ctrl-C stops the servers in order instead of orphaning them.
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


@pytest.fixture(autouse=True)
def default_logging() -> Iterator[None]:
    """Every test starts with structlog's defaults: a CLI command run in-process configures
    logging for the whole process (a level filter, JSON lines), and a later test capturing
    debug lines with `structlog.testing.capture_logs` would otherwise see none of them."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if names & POSTGRES_FIXTURES or params.get("database_url") == "postgres":
            item.add_marker(pytest.mark.postgres)
        if names & NATS_FIXTURES:
            item.add_marker(pytest.mark.nats)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.Postgres]:
    """LLMCTL_TEST_DATABASE_URL's server if set, else a throwaway cluster for the session."""
    external = os.environ.get(EXTERNAL_DATABASE_ENV)
    if external:
        yield services.ExternalPostgres(external)
        return
    server = services.PostgresServer.launch()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: services.Postgres) -> Iterator[str]:
    """Plain URL of a new, empty database of this test's own; dropped afterwards."""
    _require_running(postgres_server, "Postgres", "fresh_postgres_server")
    with services.scratch_database(postgres_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """Plain URL of a SQLite file (not yet created) in the test's tmp_path."""
    return f"sqlite:///{tmp_path / 'llmctl.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on Postgres (ids `sqlite`, `postgres`)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def fresh_postgres_server() -> Iterator[services.PostgresServer]:
    """A throwaway cluster of this test's own (even with an external URL), to stop at will."""
    server = services.PostgresServer.launch()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[services.NatsServer]:
    """A JetStream-enabled NATS server shared by the session; do not stop it."""
    server = services.NatsServer.launch()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def nats_url(nats_server: services.NatsServer) -> str:
    """`nats://127.0.0.1:<port>` of the shared server; pair it with `nats_prefix`."""
    _require_running(nats_server, "NATS", "fresh_nats_server")
    return nats_server.url


@pytest.fixture
def nats_prefix() -> str:
    """A subject (and stream name) prefix unique to this test, such as `t1a2b3c4d5e6`."""
    return f"t{secrets.token_hex(6)}"


@pytest.fixture
def fresh_nats_server() -> Iterator[services.NatsServer]:
    """A NATS server of this test's own, to stop, kill and start at will."""
    server = services.NatsServer.launch()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def secure_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[natssecure.Servers]:
    """One secured NATS server of each kind the session asks for, with its client files."""
    servers = natssecure.Servers(tmp_path_factory.mktemp("secure-nats"))
    try:
        yield servers
    finally:
        servers.close()


def _require_running(
    server: services.Postgres | services.NatsServer, name: str, fresh_fixture: str
) -> None:
    if not server.running:
        pytest.fail(
            f"the session {name} server was stopped by an earlier test; "
            f"tests that stop a server must use {fresh_fixture}"
        )


def pytest_report_header() -> list[str]:
    lines = []
    finders = [("postgres", services.find_postgres_bin), ("nats", services.find_nats_server)]
    if os.environ.get(EXTERNAL_DATABASE_ENV):
        lines.append(f"llmctl postgres: external server from {EXTERNAL_DATABASE_ENV}")
        finders = finders[1:]
    for label, find in finders:
        try:
            lines.append(f"llmctl {label}: {find()}")
        except services.ServiceUnavailable as exc:
            lines.append(f"llmctl {label}: MISSING ({exc})")
    return lines
