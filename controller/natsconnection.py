"""The NATS connection of ``llmctl watch``: connect within a deadline, then reconnect for ever,
following an embedded server that moved to another port.

`Connection.open` gives up when no server answers within the time it is given (the watch's
``--timeout``, at most a few seconds), so a wrong URL fails fast. Once connected it reconnects
for ever and says so, each time on a line of its own, through the ``note`` callable the caller
gives (`controller.watch` prints above its progress bars). When the URL came from the data
directory (the ``nats.url`` a running ``serve`` writes, see `controller.embedded_nats`), it
re-reads that file while disconnected, and reconnects to the new URL of a ``serve`` that
restarted on another port. ``on_reconnected`` runs after every reconnection, so the caller can
subscribe again (a JetStream consumer does not survive a new server). It presents the
`dwqueue.natsauth.NatsAuth` it is given (the embedded server's token when the URL came from the
data directory); a server that refuses it fails `open` at once, with the reason and the fix
(`refused` is then True). Publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Awaitable, Callable

import nats.errors

from controller import embedded_nats
from dwqueue import connector, natsauth

NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)
CONNECT_TIMEOUT_S = 5.0
REDISCOVER_S = 0.25  # how often a disconnected watch re-reads the data directory's URL


class Connection:
    """One nats-py client; `open`, then `close` (idempotent)."""

    def __init__(
        self,
        note: Callable[[str], None],
        data_dir: pathlib.Path | None = None,
        auth: natsauth.NatsAuth | None = None,
    ) -> None:
        self.nc = connector.GuardedClient()
        self.url = ""
        self.refused = False  # the server refused the credentials or TLS (set by `open`)
        self.reason = ""  # the error behind a failed `open`, as nats-py or the OS said it
        self._auth = auth or natsauth.NatsAuth()
        self.on_reconnected: Callable[[], Awaitable[None]] | None = None
        self._note = note
        self._data_dir = data_dir
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
        """Connect to ``url`` within ``timeout_s``; None once connected, else the one line
        saying why not and what to fix (the client is then closed)."""
        self.url = url
        try:
            await connector.dial(
                self.nc,
                url,
                self._auth,
                timeout_s=max(timeout_s, 0.1),
                name="llmctl-watch",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=max(0.1, min(2.0, timeout_s)),
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except (natsauth.NatsRefused, natsauth.NatsUnreachable) as exc:
            self.refused = isinstance(exc, natsauth.NatsRefused)
            cause = exc.__cause__ or exc
            self.reason = str(cause) or type(cause).__name__
            await self.close()
            return str(exc)
        if self._data_dir is not None:
            self._spawn(self._follow_moves(self._data_dir))
        return None

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.nc.close()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_moves(self, data_dir: pathlib.Path) -> None:
        """While disconnected, point the client at the URL the data directory now names."""
        while not self._closing:
            await asyncio.sleep(REDISCOVER_S)
            if self.nc.is_connected or self.nc.is_closed:
                continue
            url = await asyncio.to_thread(embedded_nats.running_url, data_dir)
            if url is not None and url != self.url:
                self.url = url
                self.nc.set_server_pool([url])  # used from the next reconnection attempt
                self._note(f"note: NATS moved to {url}; reconnecting there")

    async def _on_error(self, exc: Exception) -> None:
        del exc  # every failed reconnect reports here; the callbacks below say it once

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._note("note: NATS disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        self._note(f"note: NATS reconnected ({self.url})")
        if self.on_reconnected is not None:
            # Not awaited here: it talks to the server, and nats-py runs this callback from
            # inside its reconnection.
            self._spawn(self.on_reconnected())
