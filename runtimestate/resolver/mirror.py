"""The mirror: another process's view of the runtime state, kept current.

Used by `Resolver.from_database` in any process that is not the controller. It loads the persisted
status (`runtimestate.reconcile.status.load_states`) and the desired state (for credentials), then
follows ``<prefix>.v1.state.<backend>`` NATS messages (payload: `snapshot.to_wire` of one backend's
state, or ``{"name": ..., "removed": true}`` for a backend no longer declared, both published by the
backend cycle after commit) when a NATS URL is given, and re-reads the database on an interval
either way: every half second without NATS, every 30 s with it (to pick up deleted backends and
anything missed while disconnected); the desired state every 10 s. Each change swaps in a new
immutable `Snapshot`; readers never see a half-applied update.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import nats
import nats.aio.client
import nats.aio.msg
import nats.errors
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from dwqueue import connector, flushing, natsauth
from runtimestate import database, desired, snapshot
from runtimestate.desired import store
from runtimestate.reconcile import status

log = structlog.get_logger(__name__)

POLL_S = 0.5  # status refresh interval without NATS: a change shows within a second
RESYNC_S = 30.0  # status refresh interval with NATS (deletions, gaps while disconnected)
DESIRED_S = 10.0  # desired-state refresh interval (only credentials come from it)
COALESCE_S = 0.05  # a cycle publishes every backend at once: apply them as one snapshot
_CONNECT_TIMEOUT_S = 5.0


class Mirror:
    """The latest snapshot and desired state read from the database and NATS."""

    def __init__(self, engine: AsyncEngine, prefix: str, refresh_s: float) -> None:
        self._engine = engine
        self._sessions = database.session_factory(engine)
        self._prefix = prefix
        self._refresh_s = refresh_s
        self._nc: nats.aio.client.Client | None = None
        self._task: asyncio.Task[None] | None = None
        # What messages said of each backend since the refresh began (None: removed).
        self._touched: dict[str, snapshot.LLMState | None] = {}
        self._desired_at = float("-inf")
        self._pending: dict[str, snapshot.LLMState | None] = {}  # not applied yet
        self._flush: asyncio.TimerHandle | None = None
        self.snapshot = snapshot.EMPTY
        self.desired: desired.DesiredState | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        nats_url: str | None = None,
        prefix: str = "llmctl",
        refresh_s: float | None = None,
        nats_auth: natsauth.NatsAuth | None = None,
    ) -> Mirror:
        """Connect, subscribe (before the first read, so no change falls in between) and load.

        Raises `database.DatabaseUrlError`, SQLAlchemy's errors when the database cannot be
        read, `natsauth.NatsRefused` when NATS refuses ``nats_auth`` and
        `natsauth.NatsUnreachable` when it cannot be reached (both ``OSError``, the message
        is the one line to show), and `nats.errors.Error` when the subscription fails.
        """
        interval = refresh_s if refresh_s is not None else (RESYNC_S if nats_url else POLL_S)
        feed = cls(database.create_async_engine(url), prefix, interval)
        try:
            if nats_url is not None:
                await feed._subscribe(nats_url, nats_auth or natsauth.NatsAuth())
            await feed.refresh()
        except BaseException:
            await feed.aclose()
            raise
        feed._task = asyncio.create_task(feed._poll(), name="llmctl-resolver-feed")
        return feed

    @property
    def client(self) -> nats.aio.client.Client | None:
        """The NATS connection followed (None without NATS): the resolver shares outcomes on
        it. Closed by `aclose`."""
        return self._nc

    async def _subscribe(self, url: str, auth: natsauth.NatsAuth) -> None:
        self._nc = connector.GuardedClient()
        await connector.dial(
            self._nc,
            url,
            auth,
            timeout_s=_CONNECT_TIMEOUT_S,
            name="llmctl-resolver",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            reconnected_cb=self._on_reconnected,
        )
        await self._nc.subscribe(f"{self._prefix}.v1.state.*", cb=self._on_message)
        await flushing.flush(self._nc, _CONNECT_TIMEOUT_S)  # the server has the SUB: read next

    async def _on_message(self, msg: nats.aio.msg.Msg) -> None:
        try:
            name, state = _decode(msg.data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("resolver_bad_state_message", subject=msg.subject, error=str(exc))
            return
        self._touched[name] = state
        self._pending[name] = state
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(COALESCE_S, self._apply)

    def _apply(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        current = self.snapshot
        backends = dict(current.backends)
        for name, state in pending.items():
            if state is None:
                backends.pop(name, None)
            else:
                backends[name] = state
        self.snapshot = snapshot.Snapshot(backends, current.cycle, current.taken_at)

    async def _on_reconnected(self) -> None:
        # Messages published while we were away are lost (core NATS): read the database again.
        if self._task is not None:
            asyncio.get_running_loop().create_task(self._refresh_logged())

    async def refresh(self) -> None:
        """Read the persisted status (and, every DESIRED_S, the desired state); keep the
        states NATS delivered meanwhile, which are newer than what the read saw."""
        self._touched = {}
        now = asyncio.get_running_loop().time()
        wanted = now - self._desired_at >= DESIRED_S

        async def read(
            session: AsyncSession,
        ) -> tuple[dict[str, snapshot.LLMState], desired.DesiredState | None]:
            states = await status.load_states(session)
            return states, (await store.load(session) if wanted else None)

        states, read_desired = await database.read_snapshot(self._sessions, read)
        if read_desired is not None:
            self.desired, self._desired_at = read_desired, now
        for name, newer in self._touched.items():
            if newer is None:
                states.pop(name, None)
            else:
                states[name] = newer
        if states != dict(self.snapshot.backends):
            self.snapshot = snapshot.Snapshot(states, 0, dt.datetime.now(dt.UTC))

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # A database outage must not stop the feed: the last snapshot stays, and the
            # next interval tries again.
            log.exception("resolver_refresh_failed")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self._refresh_logged()

    async def aclose(self) -> None:
        """Stop polling, close NATS and dispose of the engine. Idempotent."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.close()
            self._nc = None
        await self._engine.dispose()


def _decode(data: bytes) -> tuple[str, snapshot.LLMState | None]:
    """A state message: the backend's name and its state, or None when it was removed."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise TypeError(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("removed") is True:
        name = doc["name"]
        if not isinstance(name, str) or not name:
            raise ValueError("a removal names no backend")
        return name, None
    state = snapshot.state_from_dict(doc)
    return state.name, state
