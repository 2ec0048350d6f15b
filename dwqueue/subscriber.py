"""Reads download events back: the latest event of every job first, then live ones.

Used by ``llmctl watch`` and by any application that follows downloads. With JetStream (the
publisher's ``<PREFIX>_DOWNLOADS`` stream exists) a `Watch` is an ordered push consumer with
``deliver_policy=last_per_subject``: it first delivers the newest event of every matching job,
so a watch started mid-download shows the current progress at once, then follows new events.
Without JetStream, or before the stream exists, it falls back to a plain subscription (live
events only) and says so in `Watch.replaying`.

The caller owns the NATS connection (a connected nats-py client) and closes it. This module
decodes with `dwqueue.events.from_wire`; undecodable messages are logged and skipped, never
raised. It must not touch the database.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import api

from dwqueue import events, flushing

log = structlog.get_logger(__name__)

_JETSTREAM_UNAVAILABLE = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.NotFoundError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


class Watch:
    """An async iterator of `DownloadEvent`s; use as ``async with Watch(nc) as w: async for``.

    ``backend`` and ``job_id`` narrow the subjects; ``replay=False`` skips the JetStream replay.
    Events arrive in publication order per job; ``seq`` tells a reader which is newest.
    """

    def __init__(
        self,
        nc: Client,
        *,
        prefix: str = events.DEFAULT_PREFIX,
        backend: str | None = None,
        job_id: str | None = None,
        replay: bool = True,
        request_timeout_s: float = 2.0,
        max_pending: int = 10_000,
    ) -> None:
        self.prefix = events.check_prefix(prefix)
        self.subject = events.filter_subject(prefix, backend, job_id)
        self.replaying = False  # True once a JetStream consumer with replay is in place
        self.undecodable = 0
        self._nc = nc
        self._replay = replay
        self._timeout_s = request_timeout_s
        self._queue: asyncio.Queue[events.DownloadEvent] = asyncio.Queue(max_pending)
        self._sub: Any = None

    async def __aenter__(self) -> Watch:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Subscribe: a replaying JetStream consumer if possible, else a plain subscription."""
        if self._replay:
            js = self._nc.jetstream(timeout=self._timeout_s)
            try:
                self._sub = await js.subscribe(
                    self.subject,
                    stream=events.stream_name(self.prefix),
                    cb=self._on_message,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                )
                self.replaying = True
            except _JETSTREAM_UNAVAILABLE as exc:
                log.info("watch: no replay stream; following live events only", error=str(exc))
        if self._sub is None:
            self._sub = await self._nc.subscribe(self.subject, cb=self._on_message)
        # Once open returns, the server knows the subscription: nothing published after is lost.
        await flushing.flush(self._nc, self._timeout_s)

    async def _on_message(self, msg: Any) -> None:
        try:
            event = events.from_wire(msg.data)
        except events.WireError as exc:
            self.undecodable += 1
            log.warning("watch: skipping an undecodable event", subject=msg.subject, error=str(exc))
            return
        if self._queue.full():  # a reader that fell far behind loses the oldest, not the newest
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def next(self, timeout_s: float | None = None) -> events.DownloadEvent:
        """The next event; raises `TimeoutError` when none comes within ``timeout_s``."""
        return await asyncio.wait_for(self._queue.get(), timeout_s)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> events.DownloadEvent:
        return await self._queue.get()

    async def close(self) -> None:
        """Unsubscribe (the ephemeral consumer goes with it); idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            try:
                await sub.unsubscribe()
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.debug("watch: unsubscribe failed", error=str(exc))
