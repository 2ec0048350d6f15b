"""Connecting a nats-py client with llmctl's credentials and TLS, within a deadline.

`GuardedClient` is the nats-py client every NATS connection of llmctl uses; `dial` is the one
way they make their first connection (the publisher of
``serve``, ``watch``, the CLI's one-shot publishers, the resolver's mirror): it passes
`dwqueue.natsauth.NatsAuth.options`, stops at once when the server refuses the client
(credentials, TLS: `natsauth.NatsRefused`) instead of retrying for ever, and otherwise gives up
after the deadline (`natsauth.NatsUnreachable`); both carry the `natsauth.describe` line. When
TLS was asked for (a ``tls://`` URL or TLS files) and a server does not offer it, nats-py would
carry on in plain text, credentials and all; `GuardedClient` refuses such a server before it
sends anything, on the first connection and on every reconnection.
`probe` is one such attempt, closed again: ``serve`` uses it to fail fast at start.

The caller owns the client and its reconnection options. Nothing here logs or publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio import client as nats_client

from dwqueue import natsauth


class GuardedClient(nats_client.Client):
    """nats-py's client, refusing a server that does not offer the TLS this client was asked
    for (a context given, or a ``tls://`` URL) before it sends its CONNECT (credentials)."""

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        # nats-py calls this with the server's first INFO of every (re)connection, before it
        # upgrades to TLS when the server requires it and before it sends CONNECT.
        if initial_connection and self._wants_tls() and not info.get("tls_required"):
            raise nats.errors.Error("nats: tls not offered by the server")
        await super()._process_info(info, initial_connection)

    @property
    def offers_jetstream(self) -> bool:
        """The server's INFO of this connection says it has JetStream enabled."""
        return bool(self._server_info.get("jetstream"))

    def _wants_tls(self) -> bool:
        server = self._current_server
        return "tls" in self.options or (server is not None and server.uri.scheme == "tls")


ErrorCallback = Callable[[Exception], Awaitable[None]]
_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
_CLOSE_S = 0.5


async def dial(
    client: GuardedClient,
    url: str,
    auth: natsauth.NatsAuth,
    *,
    timeout_s: float,
    error_cb: ErrorCallback | None = None,
    **options: Any,
) -> None:
    """Connect ``client`` to ``url`` with ``auth`` and ``options`` (nats-py's keywords).

    Raises `natsauth.NatsRefused` as soon as the server refuses this client (or a file of
    ``auth`` cannot be used), `natsauth.NatsUnreachable` when not connected within
    ``timeout_s``; the client is then closed. ``error_cb`` still sees every error.
    """
    tls_options = auth.options(url)  # raises NatsAuthError before any network I/O
    seen: list[Exception] = []
    refused = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        seen.append(exc)
        if natsauth.is_refusal(exc):
            refused.set()
        if error_cb is not None:
            await error_cb(exc)

    connecting = asyncio.ensure_future(
        client.connect(url, error_cb=on_error, **tls_options, **options)
    )
    stopping = asyncio.ensure_future(refused.wait())
    await asyncio.wait(
        {connecting, stopping}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    stopping.cancel()
    cause = await _outcome(connecting)
    if cause is None:
        return
    if _certificate_missing(client, auth):  # the server drops us without saying why
        seen.append(nats.errors.Error("nats: client certificate required"))
    refusal = next((e for e in reversed(seen) if natsauth.is_refusal(e)), None)
    cause = refusal or (seen[-1] if seen else None) or cause
    await _close(client)
    raise natsauth.failure(cause, url) from cause


async def _outcome(connecting: asyncio.Future[None]) -> BaseException | None:
    """None when ``connecting`` ended connected as asked; else what went wrong (the task is
    cancelled if it still runs)."""
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_NATS_ERRORS):
            await connecting
        return TimeoutError("no answer in time")
    if connecting.cancelled():
        return TimeoutError("no answer in time")
    return connecting.exception()


async def probe(url: str, auth: natsauth.NatsAuth, *, timeout_s: float = 2.0) -> None:
    """Connect once and close; raises as `dial` does."""
    client = GuardedClient()
    await dial(
        client,
        url,
        auth,
        timeout_s=timeout_s,
        name="llmctl-probe",
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.2,
        connect_timeout=timeout_s,
    )
    with contextlib.suppress(*_NATS_ERRORS):
        await client.close()


async def _close(client: GuardedClient) -> None:
    """Close a client whose connect failed. Bounded: after a failed TLS handshake nats-py
    waits for ever for the plain socket it upgraded to close."""
    # AssertionError: nats-py's close of a client that failed before it had a transport.
    with contextlib.suppress(AssertionError, *_NATS_ERRORS):
        await asyncio.wait_for(client.close(), _CLOSE_S)


def _certificate_missing(client: GuardedClient, auth: natsauth.NatsAuth) -> bool:
    """The server verifies client certificates (its INFO said so) and we have none."""
    info: dict[str, Any] = getattr(client, "_server_info", {}) or {}
    return bool(info.get("tls_verify")) and auth.cert_file is None
