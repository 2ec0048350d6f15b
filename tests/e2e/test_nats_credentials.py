"""NATS that requires a user and password, or a token: ``serve``, the CLI and
`Resolver.from_database` connect with them from a file or the environment, and a wrong one
stops them with one line naming what to fix (exit 1, no traceback, the secret never shown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats
import pytest
from typer.testing import CliRunner

import migrations
from controller import cli
from dwqueue import natsauth
from runtimestate import resolver, snapshot
from tests import services
from tests.e2e import serve_harness as h
from tests.e2e.conftest import Cli
from tests.unit.test_resolver import backend, model

PASSWORD = "pw-0f6c2a9e-secret"  # the test servers', made up here
TOKEN = "tk-8d1e4b77-secret"
WRONG = "wrong-4f1c-secret"
NEVER = "0 0 1 1 *"
# In-process commands must not pick up a deployment's variables from the test's environment.
_NO_LLMCTL: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LLMCTL_")}


@pytest.fixture(scope="module")
def password_nats() -> Iterator[services.NatsServer]:
    server = services.NatsServer.launch(["--user", "alice", "--pass", PASSWORD])
    yield server
    server.close()


@pytest.fixture(scope="module")
def token_nats() -> Iterator[services.NatsServer]:
    server = services.NatsServer.launch(["--auth", TOKEN])
    yield server
    server.close()


def _secret(tmp_path: pathlib.Path, name: str, value: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(value + "\n")  # as `echo ... > file` writes it
    path.chmod(0o600)
    return path


async def _received(
    url: str, subject: str, action: Callable[[], Any], **auth: Any
) -> tuple[Any, list[bytes]]:
    """Run ``action`` in a thread while subscribed to ``subject``; its result and the messages
    that arrived within a second of it."""
    nc = await nats.connect(url, **auth)
    seen: list[bytes] = []
    arrived = asyncio.Event()

    async def on_message(msg: Any) -> None:
        seen.append(msg.data)
        arrived.set()

    try:
        await nc.subscribe(subject, cb=on_message)
        await nc.flush()
        result = await asyncio.to_thread(action)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 1.0)
    finally:
        await nc.close()
    return result, seen


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


async def test_the_cli_asks_for_a_cycle_with_a_user_and_a_password_file(
    llmctl: Cli, tmp_path: pathlib.Path, password_nats: services.NatsServer, nats_prefix: str
) -> None:
    password = _secret(tmp_path, "nats-password", PASSWORD)
    flags = [*("--nats-url", password_nats.url, "--subject-prefix", nats_prefix)]
    flags += ["--nats-user", "alice", "--nats-password-file", str(password)]
    result, seen = await _received(
        password_nats.url,
        f"{nats_prefix}.v1.control.trigger",
        lambda: llmctl(*flags, "model", "add", "llama3"),
        user="alice",
        password=PASSWORD,
    )
    assert result.code == 0, result.err
    (body,) = seen  # one trigger, naming the cycle request the command recorded
    assert re.fullmatch(r"[0-9a-f]{32}", json.loads(body)["request_id"])


def test_a_wrong_password_stops_the_cli_with_one_line_naming_the_flags_and_exit_1(
    llmctl: Cli, tmp_path: pathlib.Path, password_nats: services.NatsServer, nats_prefix: str
) -> None:
    wrong = _secret(tmp_path, "nats-password", WRONG)
    result = llmctl(
        *("--nats-url", password_nats.url, "--subject-prefix", nats_prefix),
        *("--nats-user", "alice", "--nats-password-file", str(wrong)),
        *("model", "add", "llama3"),
    )
    assert result.code == 1
    assert "model/llama3 created" in result.out  # saved: only the trigger was refused
    line = _one_line_error(result.err)
    assert line.startswith(
        f"error: the change is saved, but NATS at {password_nats.url} refused the credentials"
    )
    assert "--nats-password-file" in line
    assert WRONG not in result.err + result.out


def test_watch_and_reconcile_with_a_wrong_password_exit_1_with_one_line(
    llmctl: Cli, tmp_path: pathlib.Path, password_nats: services.NatsServer
) -> None:
    wrong = _secret(tmp_path, "nats-password", WRONG)
    flags = ["--nats-url", password_nats.url, "--nats-user", "alice"]
    flags += ["--nats-password-file", str(wrong)]
    for command in (["watch", "--timeout", "5"], ["reconcile", "--once"]):
        result = llmctl(*flags, *command)
        assert result.code == 1, (command, result.err)
        line = _one_line_error(result.err)
        assert "refused the credentials" in line, command
        assert WRONG not in result.err + result.out


def test_a_password_and_its_file_both_in_the_environment_exit_2_naming_both(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = _secret(tmp_path, "nats-password", PASSWORD)
    env = {"LLMCTL_NATS_PASSWORD": WRONG, "LLMCTL_NATS_PASSWORD_FILE": str(path)}
    result = llmctl("model", "list", env=env)
    assert result.code == 2
    assert "LLMCTL_NATS_PASSWORD and LLMCTL_NATS_PASSWORD_FILE are both set" in result.err
    assert WRONG not in result.err + result.out
    flag = llmctl("--nats-password-file", str(path), "model", "list", env=env)
    assert flag.code == 0, flag.err  # the flag wins over the environment


def test_an_unreadable_password_file_exits_1_naming_the_flag(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "nope"
    result = llmctl("--nats-password-file", str(missing), "model", "list")
    assert result.code == 1
    assert _one_line_error(result.err) == (
        f"error: cannot read --nats-password-file {missing} (nats_password_file): "
        "no such file or directory; give a file the user running llmctl can read"
    )


async def test_the_cli_uses_a_token_from_the_environment_or_a_file_and_never_from_argv(
    llmctl: Cli, tmp_path: pathlib.Path, token_nats: services.NatsServer, nats_prefix: str
) -> None:
    flags = ("--nats-url", token_nats.url, "--subject-prefix", nats_prefix)
    subject = f"{nats_prefix}.v1.control.trigger"
    token = _secret(tmp_path, "nats-token", TOKEN)
    result, seen = await _received(
        token_nats.url,
        subject,
        lambda: llmctl(*flags, "model", "add", "llama3", "--nats-token-file", str(token)),
        token=TOKEN,
    )
    assert (result.code, len(seen)) == (0, 1), result.err
    result, seen = await _received(
        token_nats.url,
        subject,
        lambda: llmctl(*flags, "model", "add", "qwen2", env={"LLMCTL_NATS_TOKEN": TOKEN}),
        token=TOKEN,
    )
    assert (result.code, len(seen)) == (0, 1), result.err
    refused = await asyncio.to_thread(llmctl, *flags, "--nats-token", TOKEN, "model", "list")
    assert refused.code == 2
    assert "No such option" in refused.err


async def test_serve_follows_triggers_and_publishes_on_nats_with_a_password_file(
    tmp_path: pathlib.Path, sqlite_url: str, password_nats: services.NatsServer, nats_prefix: str
) -> None:
    password = _secret(tmp_path, "nats-password", PASSWORD)
    env = {"LLMCTL_NATS_USER": "alice", "LLMCTL_NATS_PASSWORD_FILE": str(password)}
    serve = h.Serve(
        tmp_path, sqlite_url, password_nats.url, nats_prefix, args=("--cycle-cron", NEVER), env=env
    )
    serve.start()
    nc = await nats.connect(password_nats.url, user="alice", password=PASSWORD)
    cycles: list[bytes] = []
    arrived = asyncio.Event()

    async def on_cycle(msg: Any) -> None:
        cycles.append(msg.data)
        arrived.set()

    try:
        await serve.ready()
        await nc.subscribe(f"{nats_prefix}.v1.cycles", cb=on_cycle)
        await nc.flush()
        await asyncio.sleep(0.5)  # serve's first cycle, if it runs at start, is over: not counted
        cycles.clear()
        arrived.clear()
        # A change from the CLI records a cycle request in the database and triggers it: serve
        # runs only cycles the database confirms (a bare `{}` on the subject is ignored).
        flags = [*("--database-url", sqlite_url, "--nats-url", password_nats.url)]
        flags += [*("--subject-prefix", nats_prefix, "--nats-user", "alice")]
        flags += ["--nats-password-file", str(password)]
        added = await asyncio.to_thread(
            CliRunner().invoke, cli.app, [*flags, "model", "add", "llama3"], env=_NO_LLMCTL
        )
        assert added.exit_code == 0, added.output
        with contextlib.suppress(TimeoutError):  # a trigger in, a summary out
            await asyncio.wait_for(arrived.wait(), 15)
        assert cycles, serve.logs()
        assert PASSWORD not in serve.logs()
    finally:
        await nc.close()
        await serve.stop()


async def test_serve_with_a_wrong_password_exits_1_with_one_line_and_no_traceback(
    tmp_path: pathlib.Path, sqlite_url: str, password_nats: services.NatsServer, nats_prefix: str
) -> None:
    wrong = _secret(tmp_path, "nats-password", WRONG)
    serve = h.Serve(tmp_path, sqlite_url, password_nats.url, nats_prefix)
    serve.args = ("--nats-user", "alice", "--nats-password-file", str(wrong))
    serve.start()
    assert serve.proc is not None
    code = await asyncio.to_thread(serve.proc.wait, 30)
    logs = serve.logs()
    assert code == 1, logs
    errors = [line for line in logs.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, logs
    assert "refused the credentials" in errors[0]
    assert "Traceback" not in logs
    assert WRONG not in logs


@pytest.fixture
def migrated_url(sqlite_url: str) -> str:
    migrations.upgrade(sqlite_url)
    return sqlite_url


async def _follows(r: resolver.Resolver, url: str, prefix: str, **auth: Any) -> None:
    """Publish a backend's state as the cycle does; return once the resolver serves it."""
    state = backend("gpu-1", model("llama3:latest"))
    request = resolver.Request(models=("llama3:latest",))
    nc = await nats.connect(url, **auth)
    try:
        await nc.publish(f"{prefix}.v1.state.gpu-1", snapshot.to_wire(state))
        await nc.flush()
    finally:
        await nc.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert r.resolve(request).provider.backend == "gpu-1"
            return
        except resolver.ResolveError:
            await asyncio.sleep(0.02)
    raise AssertionError("the resolver never saw the published state")


async def test_resolver_from_database_follows_nats_with_a_password(
    migrated_url: str, password_nats: services.NatsServer, nats_prefix: str
) -> None:
    auth = natsauth.NatsAuth(user="alice", password=PASSWORD)
    r = await resolver.Resolver.from_database(
        migrated_url, password_nats.url, nats_prefix, nats_auth=auth, refresh_s=60
    )
    try:
        await _follows(r, password_nats.url, nats_prefix, user="alice", password=PASSWORD)
    finally:
        await r.aclose()


async def test_resolver_from_database_reads_the_token_from_the_environment(
    migrated_url: str,
    token_nats: services.NatsServer,
    nats_prefix: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMCTL_NATS_TOKEN_FILE", str(_secret(tmp_path, "token", TOKEN)))
    r = await resolver.Resolver.from_database(
        migrated_url, token_nats.url, nats_prefix, refresh_s=60
    )
    try:
        await _follows(r, token_nats.url, nats_prefix, token=TOKEN)
    finally:
        await r.aclose()


async def test_resolver_from_database_refused_raises_the_one_line_reason_at_once(
    migrated_url: str, token_nats: services.NatsServer, nats_prefix: str
) -> None:
    started = time.monotonic()
    with pytest.raises(natsauth.NatsRefused) as raised:
        await resolver.Resolver.from_database(
            migrated_url, token_nats.url, nats_prefix, nats_auth=natsauth.NatsAuth(token=WRONG)
        )
    assert time.monotonic() - started < 3.0  # not the connect deadline: a refusal is final
    assert str(raised.value).startswith(f"NATS at {token_nats.url} refused the credentials")
    assert WRONG not in str(raised.value)
