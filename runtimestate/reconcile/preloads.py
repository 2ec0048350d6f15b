"""The preloads llmctl made: the `preloaded_models` record, and preloads still in flight.

The record (one row per backend and model key) is what lets llmctl unload only the models it
preloaded itself once they stop being warm (`runtimestate.reconcile.warmth`). The executor
writes a row before it sends a preload, so a model llmctl loaded is never left without one,
and drops it once the unload is done; the backend cycle reads the rows with the desired state.

`Pending` holds, in this process, the preloads whose result is unknown: the request failed
in a way that says nothing of the node (a timeout, a reset connection, a 5xx), so the model
may still be loading. The planner is told not to send them again until an observation shows
the model loaded or `grace` has passed: exactly one request per warm-up. A preload the node
answered is not pending: if the next observation does not show the model loaded, something
else unloaded it, and it is preloaded again.

Store functions take a session and never commit (the caller owns the transaction). `Pending`
reads no clock: instants are given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import database
from runtimestate.desired import schema

DEFAULT_GRACE = dt.timedelta(minutes=2)  # a large model's load time on a slow disk


async def load(session: AsyncSession) -> Mapping[str, frozenset[str]]:
    """The model keys llmctl preloaded, by backend."""
    table = schema.PreloadedModelRow
    found: dict[str, set[str]] = {}
    for backend, key in await session.execute(sa.select(table.backend, table.model_key)):
        found.setdefault(backend, set()).add(key)
    return {backend: frozenset(keys) for backend, keys in found.items()}


async def record(
    session: AsyncSession, backend: str, model: str, model_key: str, now: dt.datetime
) -> None:
    """Remember that llmctl preloads ``model`` on ``backend``. Idempotent."""
    keys = {"backend": backend, "model_key": model_key}
    values = {"model": model, "preloaded_at": now}
    await database.upsert(session, schema.PreloadedModelRow, keys, values)


async def forget(session: AsyncSession, backend: str, model_keys: Collection[str]) -> None:
    """Drop the record of models llmctl unloaded (or that are gone) from ``backend``."""
    if model_keys:
        table = schema.PreloadedModelRow
        await session.execute(
            sa.delete(table).where(table.backend == backend, table.model_key.in_(model_keys))
        )


async def forget_backends(session: AsyncSession, backends: Collection[str]) -> None:
    """Drop every record of backends that are no longer declared."""
    if backends:
        table = schema.PreloadedModelRow
        await session.execute(sa.delete(table).where(table.backend.in_(list(backends))))


class Pending:
    """Preloads sent whose result no observation shows yet, by backend and model key."""

    def __init__(self, grace: dt.timedelta = DEFAULT_GRACE) -> None:
        self._grace = grace
        self._sent: dict[str, dict[str, dt.datetime]] = {}

    def mark(self, backend: str, model_key: str, now: dt.datetime) -> None:
        """A preload of ``model_key`` was sent at ``now`` and its result is unknown."""
        self._sent.setdefault(backend, {})[model_key] = now

    def holds(self, backend: str) -> bool:
        """Whether any preload on ``backend`` is pending (cheap: no per-model work)."""
        return backend in self._sent

    def of(self, backend: str, loaded: Collection[str], now: dt.datetime) -> frozenset[str]:
        """The keys still pending on ``backend``, given the keys a fresh observation shows
        ``loaded`` (those are done) and the time (marks older than the grace expire)."""
        sent = self._sent.get(backend)
        if not sent:
            return frozenset()
        for key in [k for k, at in sent.items() if k in loaded or now - at >= self._grace]:
            del sent[key]
        if not sent:
            del self._sent[backend]
        return frozenset(sent)
