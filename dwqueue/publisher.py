"""Publishes download events on NATS without ever failing or slowing a download.

The composition root (``serve``, ``reconcile --once``) builds one `Publisher`, `start`s it and
hands it to the download cycle, which calls `publish` with the events the store functions
returned, after its commit. The database is the truth; NATS is a best-effort mirror:

- `start` returns at once; the connection is made, and remade after any outage, in the
  background for as long as the publisher lives (nats-py ``max_reconnect_attempts=-1``), so
  events flow again when NATS returns, without a restart. NATS being down at start is fine.
- `publish` never raises and never waits on the network: while disconnected an event is not
  sent (counted in `stats.dropped`, with one warning per outage), and messages are sent as core
  NATS publishes (no acknowledgement round trip).
- The latest unsent event of each job is kept (`dwqueue.backlog`: bounded, terminal events never
  forgotten) and published after the next (re)connect, oldest first, so a pull that ended while
  NATS was away still ends for subscribers and in the replay (`stats.republished`). A job's newer
  event published meanwhile supersedes its kept one; ``seq`` lets readers drop stale events.
- Where the server has JetStream, a stream ``<PREFIX>_DOWNLOADS`` over
  ``<prefix>.v1.downloads.>`` keeps the latest event of each job (``max_msgs_per_subject=1``)
  for a bounded age, so a late `dwqueue.subscriber.Watch` replays the current state. It is
  (re)declared on every (re)connect, before the backlog is published; on plain NATS publishing
  works the same without it. A server that offers JetStream (its INFO says so) but does not
  answer yet (just started, or electing a leader) is asked again with a growing pause for up to
  `replaystream.Settings.retry_for` (`dwqueue.replaystream` declares the stream). Until it is
  declared (or known to be missing) every event is also kept in the backlog and published
  again after, so the stream records each job's latest one.
- It presents the `natsauth.NatsAuth` it is given (credentials, TLS); a server that refuses them
  is logged once as a warning with the reason and what to set, and retried like an outage (the
  composition root checks the credentials at start with `dwqueue.connector.probe`).

This module must not touch the database, and must not raise into the download path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import nats
import nats.errors
import structlog

from dwqueue import backlog, coalescer, connector, events, flushing, natsauth, replaystream

log = structlog.get_logger(__name__)

_NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


@dataclasses.dataclass
class Stats:
    """Counters for `/metrics` and tests; only ever incremented."""

    published: int = 0  # republished ones included
    dropped: int = 0  # not sent when published; the latest of each job is kept for later
    republished: int = 0  # kept events sent after a (re)connect
    coalesced: int = 0
    connects: int = 0


class Publisher:
    """One NATS connection that publishes download events; see the module docstring."""

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        prefix: str = events.DEFAULT_PREFIX,
        auth: natsauth.NatsAuth | None = None,
        stream: replaystream.Settings | None = None,
        coalesce: coalescer.Coalescer | None = None,
        reconnect_wait_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        name: str = "llmctl-downloads",
        clock: Callable[[], float] = time.monotonic,
        backlog_limit: int = backlog.DEFAULT_LIMIT,
    ) -> None:
        self.prefix = events.check_prefix(prefix)
        self.stats = Stats()
        self.jetstream: bool | None = None  # None until known (also while asking again)
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        self._auth = auth or natsauth.NatsAuth()
        self._refused = False  # said once: NATS refuses our credentials or TLS
        self._stream = stream or replaystream.Settings()
        self._coalesce = coalesce
        self._reconnect_wait_s = reconnect_wait_s
        self._connect_timeout_s = connect_timeout_s
        self._name = name
        self._clock = clock
        self._nc = connector.GuardedClient()
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog = backlog.Backlog(backlog_limit)
        self._outage_drops = 0
        self._down = False
        self._closing = False
        self._subscriptions: list[tuple[str, Callable[[bytes], Coroutine[Any, Any, None]]]] = []
        self._declaring: asyncio.Task[None] | None = None  # asking a slow JetStream again

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def start(self) -> None:
        """Begin connecting in the background; returns at once and never raises."""
        self._spawn(self._connect())

    async def _connect(self) -> None:
        try:
            await self._nc.connect(
                servers=self._servers,
                **self._auth.options(self._servers[0] if self._servers else None),
                name=self._name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,  # for ever: the first connect too
                reconnect_time_wait=self._reconnect_wait_s,  # type: ignore[arg-type]
                connect_timeout=self._connect_timeout_s,  # type: ignore[arg-type]
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except _NATS_ERRORS as exc:  # only reachable if nats-py gives up after all
            log.warning("download events disabled: cannot connect to NATS", error=str(exc))
            return
        self.stats.connects += 1
        url = self._nc.connected_url
        log.info("download events connected to NATS", server=url.netloc if url else None)
        for subject, handler in self._subscriptions:  # nats-py renews them on reconnects
            await self._subscribe(subject, handler)
        await self._ensure_stream()
        await self._republish()

    async def _on_error(self, exc: Exception) -> None:
        if natsauth.is_refusal(exc) and not self._refused:
            self._refused = True  # once: nats-py keeps retrying, maybe the server is fixed
            where = self._servers[0] if self._servers else ""
            log.warning("NATS refuses this client", reason=natsauth.describe(exc, where))
            return
        log.debug("NATS connection error", error=str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if self._closing:  # our own close(): not an outage
            return
        if self.stats.connects and not self._down:
            self._down = True
            log.warning(
                "download events: NATS disconnected; keeping the latest event of each job "
                "until it is back"
            )

    async def _on_reconnected(self) -> None:
        self.stats.connects += 1
        self._down = False
        log.info("download events: NATS reconnected", dropped_while_down=self._outage_drops)
        self._outage_drops = 0
        self._spawn(self._after_reconnect())

    async def _after_reconnect(self) -> None:
        await self._ensure_stream()  # the replay stream first, so it records the backlog too
        await self._republish()

    async def _republish(self) -> None:
        """Publish the kept events, oldest first, while connected; what cannot be sent is kept
        again (unless a newer event of its job was kept meanwhile)."""
        sent = 0
        for _ in range(len(self._backlog)):  # while the stream is awaited `publish` keeps them
            if not self._nc.is_connected or (event := self._backlog.pop()) is None:
                break
            if not await self.publish(event, coalesce=False):
                break  # `publish` kept it again
            sent += 1
        self.stats.republished += sent
        if sent:
            log.info("download events: published what NATS missed", events=sent)

    async def _ensure_stream(self) -> None:
        """Declare (or update) the replay stream; on plain NATS note that there is none. A
        JetStream that is offered but does not answer is asked again in the background."""
        if not self._stream.enabled:
            self.jetstream = False
            return
        if self._declaring is not None:  # a reconnect: this declaration replaces the retries
            self._declaring.cancel()
            self._declaring = None
        self.jetstream = None
        try:
            await self._declare()
        except replaystream.NOT_ANSWERING as exc:
            if self._nc.offers_jetstream:
                reason = str(exc) or type(exc).__name__
                log.info(
                    "download events: JetStream does not answer yet; asking again", error=reason
                )
                self._declaring = asyncio.create_task(self._declare_later())
                self._tasks.add(self._declaring)
                self._declaring.add_done_callback(self._tasks.discard)
                return
            self.jetstream = False
            log.info("download events: no JetStream; publishing without replay", error=str(exc))
        except _NATS_ERRORS as exc:
            self.jetstream = False
            log.warning("download events: could not declare the replay stream", error=str(exc))
        else:
            self.jetstream = True

    async def _declare_later(self) -> None:
        """Ask again, pausing longer each time, until JetStream answers or `retry_for` ends;
        then publish the events kept meanwhile, so the stream has each job's latest."""
        loop = asyncio.get_running_loop()
        pause, last = self._stream.first_retry_s, "no answer"
        give_up = loop.time() + self._stream.retry_for.total_seconds()
        while loop.time() < give_up:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 8.0)
            try:
                await self._declare()
            except replaystream.NOT_ANSWERING as exc:
                last = str(exc) or type(exc).__name__
                continue
            except _NATS_ERRORS as exc:  # it answered, with a refusal: asking again won't help
                self.jetstream = False
                log.warning("download events: could not declare the replay stream", error=str(exc))
                break
            self.jetstream = True
            log.info("download events: replay stream declared")
            break
        else:
            self.jetstream = False
            log.warning(
                "download events: JetStream did not answer; publishing without replay until "
                "NATS reconnects", error=last, waited_s=self._stream.retry_for.total_seconds(),
            )  # fmt: skip
        self._declaring = None
        await self._republish()

    async def _declare(self) -> None:
        await replaystream.declare(self._nc, self.prefix, self._stream, self._connect_timeout_s)

    async def publish(self, event: events.DownloadEvent, *, coalesce: bool = True) -> bool:
        """Send ``event`` on its subject if connected; True when handed to NATS. Never raises.

        Call only after the transaction that produced the event committed. Progress events
        the coalescer (if any) holds back count in `stats.coalesced`. An event that cannot be
        sent now is kept, as its job's latest, for the next (re)connect.
        """
        coalescing = self._coalesce if coalesce else None  # a kept event was admitted once
        if coalescing is not None and not coalescing.admit_event(event, self._clock()):
            self.stats.coalesced += 1
            return False
        if not self._nc.is_connected:
            return self._drop(event, "not connected")
        try:
            await asyncio.wait_for(
                self._nc.publish(event.subject(self.prefix), event.to_wire()),
                timeout=self._connect_timeout_s,
            )
        except _NATS_ERRORS as exc:
            return self._drop(event, str(exc) or type(exc).__name__)
        except Exception:  # never into the download path; logged with its traceback
            log.exception("download event not published: unexpected error", job_id=event.job_id)
            self.stats.dropped += 1
            return False
        if self.jetstream is None:  # the stream may not record it yet: kept for when it does
            self._backlog.keep(event)
        else:
            self._backlog.sent(event)
        self.stats.published += 1
        return True

    @property
    def unsent(self) -> int:
        """How many jobs have an event kept for the next (re)connect."""
        return len(self._backlog)

    async def publish_message(self, subject: str, payload: bytes) -> bool:
        """Send any message (state events, cycle summaries, control requests) the same way:
        dropped and counted while NATS is away, never raised. True when handed to NATS."""
        if not self._nc.is_connected:
            return self._drop_message(subject, "not connected")
        try:
            await asyncio.wait_for(
                self._nc.publish(subject, payload), timeout=self._connect_timeout_s
            )
        except _NATS_ERRORS as exc:
            return self._drop_message(subject, str(exc) or type(exc).__name__)
        except Exception:  # never into the caller's path; logged with its traceback
            log.exception("message not published: unexpected error", subject=subject)
            self.stats.dropped += 1
            return False
        self.stats.published += 1
        return True

    async def subscribe(
        self, subject: str, handler: Callable[[bytes], Coroutine[Any, Any, None]]
    ) -> None:
        """Call ``handler`` with the payload of every message on ``subject``; the subscription
        survives reconnects. Raises nothing when NATS is away: it is made on (re)connect."""
        self._subscriptions.append((subject, handler))
        if self._nc.is_connected:
            await self._subscribe(subject, handler)

    async def _subscribe(
        self, subject: str, handler: Callable[[bytes], Coroutine[Any, Any, None]]
    ) -> None:
        async def on_message(msg: Any) -> None:
            try:
                await handler(msg.data)
            except Exception:  # a bad request must not kill the subscription
                log.exception("message handler failed", subject=msg.subject)

        with contextlib.suppress(*_NATS_ERRORS):
            await self._nc.subscribe(subject, cb=on_message)

    def _drop_message(self, subject: str, reason: str) -> bool:
        self.stats.dropped += 1
        self._outage_drops += 1
        if self._outage_drops == 1:
            log.warning("message dropped: NATS unavailable", reason=reason, subject=subject)
        return False

    def _drop(self, event: events.DownloadEvent, reason: str) -> bool:
        self._backlog.keep(event)
        self.stats.dropped += 1
        self._outage_drops += 1
        if self._outage_drops == 1:  # one warning per outage, not one per event
            log.warning(
                "download event not published: NATS unavailable (the latest event of each job "
                "is published when it is back; the database keeps the state)",
                reason=reason,
                job_id=event.job_id,
                event_type=event.TYPE,
            )
        return False

    async def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until the server has everything published so far; False if it could not."""
        if not self._nc.is_connected:
            return False
        try:
            await flushing.flush(self._nc, timeout_s)
        except _NATS_ERRORS:
            return False
        return True

    async def close(self) -> None:
        """Flush what can be flushed, stop reconnecting and close; idempotent."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self._nc.is_closed:
            with contextlib.suppress(*_NATS_ERRORS):
                await self._nc.drain() if self._nc.is_connected else await self._nc.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
