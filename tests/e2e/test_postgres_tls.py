"""llmctl on a Postgres that requires TLS and a password (issue 20): the CLI, ``serve`` and
`Resolver.from_database` connect with ``sslmode=verify-full`` and the test CA, take the
password from ``LLMCTL_DATABASE_PASSWORD_FILE``, and refuse a server they cannot verify with one
line that says what to fix."""

from __future__ import annotations

import asyncio
import pathlib
import signal
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from controller import cli
from emulators import ollama
from runtimestate import resolver
from tests import certificates, pgtls
from tests.e2e import serve_harness as h
from tests.e2e.conftest import Result

pytestmark = pytest.mark.postgres
PASSWORD_FILE = "LLMCTL_DATABASE_PASSWORD_FILE"


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgtls.TlsPostgres]:
    server = pgtls.TlsPostgres.launch(tmp_path_factory.mktemp("pgtls"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def database(tls_postgres: pgtls.TlsPostgres) -> str:
    """A fresh database of the password-authenticated user, by name."""
    return tls_postgres.new_database()


@pytest.fixture
def password_file(tls_postgres: pgtls.TlsPostgres, tmp_path: pathlib.Path) -> pathlib.Path:
    """The user's password as a mounted Secret holds it: one line, newline-terminated."""
    path = tmp_path / "db-password"
    path.write_text(tls_postgres.password + "\n")
    path.chmod(0o600)
    return path


def verified(pg: pgtls.TlsPostgres, database: str, ca: pathlib.Path | None = None) -> str:
    """The user's URL with ``sslmode=verify-full`` and ``sslrootcert`` (the test CA)."""
    return f"{pg.user_url(database)}?sslmode=verify-full&sslrootcert={ca or pg.ca}"


def llmctl(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli.app, ["--database-url", url, *args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: Result, code: int, *needles: str, secret: str) -> str:
    assert result.code == code, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert secret not in result.out + result.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_the_cli_migrates_declares_and_lists_over_verified_tls_with_the_password_from_a_file(
    tls_postgres: pgtls.TlsPostgres, database: str, password_file: pathlib.Path
) -> None:
    url = verified(tls_postgres, database)
    env = {PASSWORD_FILE: str(password_file)}
    upgraded = llmctl(url, "db", "upgrade", env=env)
    assert upgraded.code == 0, upgraded.err
    added = llmctl(
        url, "backend", "add", "gpu-0", "--type", "ollama", "--url", "http://h:1", env=env
    )
    assert added.code == 0, added.err
    listed = llmctl(url, "backend", "list", "-o", "name", env=env)
    assert listed.code == 0, listed.err
    assert listed.out.split() == ["backend/gpu-0"]
    assert tls_postgres.password not in upgraded.out + added.out + listed.out + listed.err


def test_a_server_whose_certificate_names_another_host_is_refused_with_the_fix(
    tls_postgres: pgtls.TlsPostgres, database: str
) -> None:
    # The server's certificate is for localhost and 127.0.0.1; this URL calls it db.example
    # (hostaddr still reaches it), as a man in the middle's certificate would not match.
    secret = tls_postgres.password
    url = (
        f"postgresql://{pgtls.USER}:{quote(secret)}@db.example:{tls_postgres.server.port}/"
        f"{database}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={tls_postgres.ca}"
    )
    line = assert_one_line_error(
        llmctl(url, "backend", "list"),
        1,
        'does not match host name "db.example"',
        "a host name the server's certificate names",
        secret=secret,
    )
    assert "***" in line  # the URL is named, its password hidden


def test_a_server_whose_certificate_another_ca_signed_is_refused_with_the_fix(
    tls_postgres: pgtls.TlsPostgres,
    database: str,
    password_file: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    stranger = certificates.authority(tmp_path / "other", name="some other CA")
    url = verified(tls_postgres, database, ca=stranger.cert)
    result = llmctl(url, "backend", "list", env={PASSWORD_FILE: str(password_file)})
    assert_one_line_error(
        result,
        1,
        "certificate verify failed",
        "give sslrootcert= the CA certificate that signed",
        secret=tls_postgres.password,
    )


def test_a_url_with_a_password_and_a_password_file_is_refused_naming_both(
    tls_postgres: pgtls.TlsPostgres, database: str, password_file: pathlib.Path
) -> None:
    secret = tls_postgres.password
    url = verified(tls_postgres, database).replace(
        f"{pgtls.USER}@", f"{pgtls.USER}:{quote(secret)}@"
    )
    result = llmctl(url, "backend", "list", env={PASSWORD_FILE: str(password_file)})
    assert_one_line_error(result, 2, "has a password and", PASSWORD_FILE, secret=secret)


def test_an_unreadable_password_file_is_a_one_line_error_naming_it(
    tls_postgres: pgtls.TlsPostgres, database: str, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "no-such-secret"
    result = llmctl(
        verified(tls_postgres, database), "backend", "list", env={PASSWORD_FILE: str(missing)}
    )
    assert_one_line_error(
        result, 2, str(missing), PASSWORD_FILE, "no such file", secret=tls_postgres.password
    )


def test_without_the_password_the_error_says_where_to_give_it(
    tls_postgres: pgtls.TlsPostgres, database: str
) -> None:
    result = llmctl(verified(tls_postgres, database), "backend", "list", env={PASSWORD_FILE: ""})
    assert_one_line_error(
        result, 1, "no password supplied", PASSWORD_FILE, secret=tls_postgres.password
    )


async def test_serve_and_the_resolver_connect_over_verified_tls_with_the_password_file(
    tls_postgres: pgtls.TlsPostgres,
    database: str,
    password_file: pathlib.Path,
    tmp_path: pathlib.Path,
    nats_url: str,
    nats_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = verified(tls_postgres, database)
    env = {PASSWORD_FILE: str(password_file)}
    async with ollama.running(installed=["qwen2:0.5b"]) as emu:
        add = ("backend", "add", "edge-1", "--type", "ollama", "--url", emu.url)
        for args in (("db", "upgrade"), add, ("model", "add", "qwen2:0.5b")):
            done = await asyncio.to_thread(llmctl, url, *args, env=env)  # it runs its own loop
            assert done.code == 0, done.err
        serve = h.Serve(tmp_path, url, nats_url, nats_prefix, env=env).start()
        try:
            await serve.ready()  # SELECT 1 answered over TLS
            monkeypatch.setenv(PASSWORD_FILE, str(password_file))
            async with await resolver.Resolver.from_database(url, refresh_s=0.1) as found:

                def resolves() -> bool:
                    try:
                        request = resolver.Request(models=("qwen2:0.5b",))
                        return found.resolve(request).provider.backend == "edge-1"
                    except resolver.ResolveError:
                        return False

                await h.eventually(resolves, 15, "the resolver to see serve's cycle", serve)
            code, _ = await serve.stop(signal.SIGTERM)
            assert code == 0, serve.logs()
        finally:
            serve.kill()
    assert tls_postgres.password not in serve.logs()


def test_serve_with_an_unreadable_password_file_stops_at_start_in_one_line(
    tmp_path: pathlib.Path,
) -> None:
    missing = tmp_path / "no-such-secret"
    serve = h.Serve(tmp_path, "postgresql://llmctl@127.0.0.1:1/llmctl", None, "llmctl")
    serve.environ[PASSWORD_FILE] = str(missing)
    serve.start()
    assert serve.proc is not None
    assert serve.proc.wait(30) == 2
    lines = serve.logs().strip().splitlines()
    assert len(lines) == 1, serve.logs()
    assert str(missing) in lines[0]
    assert PASSWORD_FILE in lines[0]
