"""The outcome exchange: resolver processes following one fleet share what they learn, on NATS.

Started by `Resolver.share_outcomes` (which `Resolver.from_database` calls whenever it follows
NATS). Every process publishes ``<prefix>.v1.outcomes.<backend>`` (a `bulletin.Bulletin`) when
the outcomes its callers record move a provider's breaker (at once) or its figures (coalesced:
at most `PER_SECOND` messages per backend), and applies what the others publish to its
`cooldown.Tracker`: their figures replace its own (one fleet-wide EWMA), their openings and
closings open and close its breaker.

What it must not do: slow `Resolver.record_outcome`, which only calls `Exchange.note` (a set
insertion: the tracker flags breaker transitions itself, and a task sends); re-publish what it
applied (no echo storms: applying marks nothing to send); act on its own messages (each process
has an origin id); or fail the resolver when NATS goes away (a message that cannot be sent is
dropped: sharing is lost, local behaviour is not). A message that cannot be read, or is of a newer
version, is ignored with one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import Callable, Iterable

import nats.aio.client
import nats.aio.msg
import nats.aio.subscription
import nats.errors
import structlog

from dwqueue import flushing
from runtimestate.resolver import bulletin, cooldown

log = structlog.get_logger(__name__)

PER_SECOND = 4.0  # figures messages per backend per second, at most
_SUBSCRIBE_TIMEOUT_S = 5.0

Changed = Callable[[Iterable[cooldown.Key]], None]
Client = nats.aio.client.Client


def subject(prefix: str, backend: str) -> str:
    """Where the outcomes of ``backend``'s providers are published (a backend name is one
    subject token: a DNS label)."""
    return f"{prefix}.v1.outcomes.{backend}"


class Exchange:
    """One process's side of the exchange (see the module docstring).

    ``clock`` is the resolver's (the tracker's times); ``changed`` is told which providers'
    figures an applied message moved, so the resolver's signal lists follow.
    """

    def __init__(
        self,
        client: nats.aio.client.Client,
        prefix: str,
        tracker: cooldown.Tracker,
        clock: Callable[[], float],
        changed: Changed,
        per_second: float = PER_SECOND,
    ) -> None:
        self.origin = secrets.token_hex(8)
        self._client, self._prefix = client, prefix
        self._tracker, self._clock, self._changed = tracker, clock, changed
        self._interval = 1.0 / per_second
        self.pending: set[cooldown.Key] = set()  # providers whose figures are to be sent
        self._transitions = tracker.transitions  # providers whose breaker moved: send now
        self._announced: dict[cooldown.Key, float] = {}  # the openings others know of
        self._sent_at: dict[str, float] = {}  # event-loop time of each backend's last message
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: nats.aio.subscription.Subscription | None = None
        self.dropped = 0  # messages NATS would not take (disconnected): sharing lost

    @classmethod
    async def start(
        cls,
        client: nats.aio.client.Client,
        prefix: str,
        tracker: cooldown.Tracker,
        clock: Callable[[], float],
        changed: Changed,
    ) -> Exchange:
        """Subscribe (the server has the subscription when this returns) and start sending.
        Raises `nats.errors.Error` when the subscription fails."""
        shared = cls(client, prefix, tracker, clock, changed)
        shared._subscription = await client.subscribe(subject(prefix, "*"), cb=shared._on_message)
        await flushing.flush(client, _SUBSCRIBE_TIMEOUT_S)
        shared._task = asyncio.create_task(shared._run(), name="llmctl-resolver-outcomes")
        return shared

    def note(self, key: cooldown.Key) -> None:
        """``key`` has a new outcome: send its figures soon, and at once if its breaker opened
        or closed (`cooldown.Tracker.transitions`). The hot path: a set insertion, no I/O."""
        pending = self.pending
        if not pending or self._transitions:
            self._wake.set()  # the sender was idle, or has a transition to send now
        pending.add(key)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                delay = await self._send_due()
            except Exception:
                # A bug must not end sharing for the life of the process: log it, carry on.
                log.exception("resolver_outcomes_send_failed")
                delay = self._interval
            # A timer rather than asyncio.wait_for, which on Python 3.11 can swallow the
            # cancellation `aclose` sends when the wait ends at the same moment.
            timer = None if delay is None else loop.call_later(delay, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _send_due(self) -> float | None:
        """Send every backend that has a breaker transition or whose interval has passed;
        return how long until the next one is due (None: nothing pending)."""
        now, sent_at = asyncio.get_running_loop().time(), self._sent_at
        urgent = self._transitions
        urgent.intersection_update(self.pending)  # transitions from before sharing began
        by_backend: dict[str, list[cooldown.Key]] = {}
        for key in self.pending:
            by_backend.setdefault(key.partition("/")[0], []).append(key)
        due = {
            backend: keys
            for backend, keys in by_backend.items()
            if now - sent_at.get(backend, -math.inf) >= self._interval
            or not urgent.isdisjoint(keys)
        }
        for backend, keys in due.items():
            self.pending.difference_update(keys)
            urgent.difference_update(keys)
            sent_at[backend] = now
        for backend, keys in due.items():
            await self._publish(backend, keys)
        waiting = [b for b in by_backend if b not in due]
        if not waiting:
            return None if not self.pending else 0.0
        return max(0.0, min(sent_at[b] + self._interval for b in waiting) - now)

    async def _publish(self, backend: str, keys: list[cooldown.Key]) -> None:
        entries = [e for key in sorted(keys) if (e := self._entry(key)) is not None]
        if not entries:
            return
        data = bulletin.encode(bulletin.Bulletin(self.origin, backend, tuple(entries)))
        try:
            await self._client.publish(subject(self._prefix, backend), data)
        except (nats.errors.Error, OSError):
            self.dropped += 1  # NATS is away: only the sharing is lost

    def _entry(self, key: cooldown.Key) -> bulletin.Entry | None:
        figures = self._tracker.figures_of(key)
        if figures is None:
            return None
        until = self._tracker.opened_until(key)
        change = None
        if until != self._announced.get(key):
            self._remember(key, until)
            opened = self._tracker.breaker(key, self._clock())
            if opened is None:
                change = bulletin.Breaker(bulletin.CLOSED)
            else:
                change = bulletin.Breaker(bulletin.OPENED, opened[0], opened[1])
        model = key.partition("/")[2]
        return bulletin.Entry(model, figures.latency, figures.errors, figures.samples, change)

    def _remember(self, key: cooldown.Key, until: float | None) -> None:
        if until is None:
            self._announced.pop(key, None)
        else:
            self._announced[key] = until

    async def _on_message(self, msg: nats.aio.msg.Msg) -> None:
        backend = msg.subject.rpartition(".")[2]
        try:
            news = bulletin.decode(msg.data, backend)
        except bulletin.TooNew as exc:
            log.warning("resolver_outcomes_too_new", subject=msg.subject, error=str(exc))
            return
        except bulletin.Malformed as exc:
            log.warning("resolver_bad_outcomes_message", subject=msg.subject, error=str(exc))
            return
        if news.origin != self.origin:
            self.apply(news)

    def apply(self, news: bulletin.Bulletin) -> list[cooldown.Key]:
        """Take another process's bulletin into the tracker; marks nothing to send (a breaker
        state it brings counts as announced; an opening of this process's own that lasts
        longer is still sent). Returns the providers it touched."""
        now, tracker = self._clock(), self._tracker
        keys = []
        for e in news.entries:
            key = f"{news.backend}/{e.model}"
            tracker.adopt(key, cooldown.Figures(e.latency_s, e.errors, e.samples, now))
            before = tracker.opened_until(key)
            if e.breaker is not None and e.breaker.state == bulletin.OPENED:
                tracker.open_for(key, now, e.breaker.reopens_in_s, e.breaker.cooldown_s)
            elif e.breaker is not None:
                tracker.close(key)
            after = tracker.opened_until(key)
            if after != before:  # the others know it from the sender: nothing to echo
                self._transitions.discard(key)
                self._remember(key, after)
            keys.append(key)
        self._changed(keys)
        return keys

    async def aclose(self) -> None:
        """Stop sending and unsubscribe (the client is the caller's). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await subscription.unsubscribe()
