"""A server that does not offer the TLS llmctl was told to use never sees its credentials.

nats-py, asked for TLS, still goes on in plain text when a server's INFO does not require TLS,
and sends its CONNECT (user, password, token) in the clear: a man in the middle could strip TLS.
`dwqueue.connector.GuardedClient` refuses such a server first. The server here is a plain TCP
listener speaking just enough of the protocol (an INFO line) and recording every byte it is
sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator

import pytest

from dwqueue import connector, natsauth
from tests import certificates

PASSWORD = "s3cret-never-in-the-clear"


@contextlib.asynccontextmanager
async def plain_server() -> AsyncIterator[tuple[int, bytearray]]:
    """A listener that greets every connection with a plain INFO and records what it gets."""
    received = bytearray()
    info = {"server_id": "fake", "version": "2.10.0", "auth_required": True, "max_payload": 1 << 20}

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        with contextlib.suppress(OSError):
            while chunk := await reader.read(4096):
                received.extend(chunk)
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], received


@pytest.mark.parametrize("scheme", ["tls", "nats"])
async def test_a_server_not_offering_tls_is_refused_before_the_password_is_sent(
    tmp_path: pathlib.Path, scheme: str
) -> None:
    # tls:// asks for TLS by itself; a nats:// URL does with a CA file.
    ca = certificates.authority(tmp_path).cert
    auth = natsauth.NatsAuth(user="alice", password=PASSWORD, ca_file=ca)
    async with plain_server() as (port, received):
        url = f"{scheme}://127.0.0.1:{port}"
        with pytest.raises(natsauth.NatsRefused) as refused:
            await connector.dial(
                connector.GuardedClient(), url, auth, timeout_s=3.0,
                allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=1,
            )  # fmt: skip
        await asyncio.sleep(0)  # let the server read whatever was sent
    assert str(refused.value).startswith(f"NATS at {url} does not offer TLS, but TLS was asked")
    assert b"CONNECT" not in received
    assert PASSWORD.encode() not in received


async def test_reconnection_attempts_to_such_a_server_never_send_the_password(
    tmp_path: pathlib.Path,
) -> None:
    auth = natsauth.NatsAuth(user="alice", password=PASSWORD)
    async with plain_server() as (port, received):
        client = connector.GuardedClient()
        errors: list[Exception] = []

        async def note(exc: Exception) -> None:
            errors.append(exc)

        with contextlib.suppress(Exception):
            await client.connect(
                f"tls://127.0.0.1:{port}", **auth.options(f"tls://127.0.0.1:{port}"),
                error_cb=note, allow_reconnect=True, max_reconnect_attempts=3,
                reconnect_time_wait=0.05, connect_timeout=1,
            )  # fmt: skip
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 0.5)
    assert errors, "the client never tried"
    assert all("tls not offered" in str(e) for e in errors)
    assert b"CONNECT" not in received
    assert PASSWORD.encode() not in received
