"""The embedded NATS server requires its data directory's token: a local process without it
cannot publish control requests, the CLI (which reads it from the data directory) can, and the
token is never on a command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import stat
from collections.abc import Iterator
from typing import Any

import nats
import nats.errors
import pytest
from typer.testing import CliRunner

from controller import cli, embedded_nats
from tests.e2e import serve_harness as h
from tests.e2e.conftest import Cli
from tests.e2e.test_cli_downloads import enqueue


@pytest.fixture
def embedded(tmp_path: pathlib.Path) -> Iterator[embedded_nats.EmbeddedNats]:
    """An embedded server announced in ``tmp_path / "data"``, as ``serve`` starts it."""
    server = embedded_nats.EmbeddedNats(tmp_path / "data")
    server.start()
    yield server
    server.stop()


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_is_private_kept_across_restarts_and_never_on_the_command_line(
    embedded: embedded_nats.EmbeddedNats,
) -> None:
    data_dir = embedded.data_dir
    token = embedded_nats.running_token(data_dir)
    assert token is not None
    assert token == embedded.token
    assert len(token) >= 32
    assert _mode(data_dir / "nats.token") == 0o600
    assert _mode(data_dir / "nats" / "nats-server.conf") == 0o600
    argv = pathlib.Path(f"/proc/{embedded.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-c" in argv  # the config file carries it...
    assert not any(token.encode() in arg for arg in argv)  # ...what ps shows does not
    embedded.stop()
    embedded.start()
    assert embedded.token == token
    assert embedded_nats.running_token(data_dir) == token


async def test_a_client_without_the_token_cannot_publish_a_cancel(
    embedded: embedded_nats.EmbeddedNats,
) -> None:
    async def quiet(exc: Exception) -> None:
        del exc

    for auth in ({}, {"token": "guessed"}):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                embedded.url, allow_reconnect=False, error_cb=quiet, connect_timeout=2, **auth
            )
    nc = await nats.connect(embedded.url, token=embedded.token)  # the token is what it takes
    await nc.close()


async def test_the_cli_cancels_through_the_embedded_server_with_its_token(
    llmctl: Cli, database_url: str, embedded: embedded_nats.EmbeddedNats
) -> None:
    job = await asyncio.to_thread(enqueue, database_url, "gpu-1", "llama3")
    nc = await nats.connect(embedded.url, token=embedded.token)
    seen: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def on_cancel(msg: Any) -> None:
        seen.append(json.loads(msg.data))
        arrived.set()

    try:
        await nc.subscribe("llmctl.v1.control.cancel", cb=on_cancel)
        await nc.flush()
        environ = {"LLMCTL_DATA_DIR": str(embedded.data_dir), "LLMCTL_NATS_URL": ""}
        result = await asyncio.to_thread(llmctl, "downloads", "cancel", job.id, env=environ)
        assert result.code == 0, result.err
        assert "warning" not in result.err
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 2.0)
    finally:
        await nc.close()
    assert [m.get("job_id") for m in seen] == [job.id]


async def test_the_cli_asks_serve_on_its_embedded_nats_for_a_cycle_with_the_token(
    tmp_path: pathlib.Path, sqlite_url: str
) -> None:
    serve = h.Serve(tmp_path, sqlite_url, None, "llmctl", args=("--cycle-cron", "0 0 1 1 *"))
    data_dir = tmp_path / "serve-data"
    serve.start()
    try:
        await serve.ready()
        url = embedded_nats.running_url(data_dir)
        token = embedded_nats.running_token(data_dir)
        assert url is not None
        assert token is not None
        nc = await nats.connect(url, token=token)
        triggered = asyncio.Event()

        async def on_trigger(_: Any) -> None:
            triggered.set()

        try:
            await nc.subscribe("llmctl.v1.control.trigger", cb=on_trigger)
            await nc.flush()
            args = ["--database-url", sqlite_url, "model", "add", "llama3"]
            env = {"LLMCTL_DATA_DIR": str(data_dir), "LLMCTL_NATS_URL": ""}
            result = await asyncio.to_thread(CliRunner().invoke, cli.app, args, env=env)
            assert result.exit_code == 0, result.output
            await asyncio.wait_for(triggered.wait(), 5)
        finally:
            await nc.close()
    finally:
        await serve.stop()
