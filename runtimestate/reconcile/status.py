"""The status store: observed backend states, and the records of models llmctl pulled and of
LoRA adapters it loaded.

Called by the backend cycle (status written only where it changed), the download cycle (a
successful pull is recorded as made by llmctl, which the `managed` prune policy relies on), the
CLI and other processes (which read the persisted status). Functions take a session and never
commit. Imports nothing of the cycle or the adapters: ``backend list`` reads status through it
(`resumption` turns a persisted state back into a probe record).

A state's `last_ok_at` moves on every successful probe; it lives in its own column, so a cycle
that changed nothing else rewrites no document: it updates that column, in one statement for
the whole fleet. The statements a cycle sends do not depend on the fleet's size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import operator
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import database, snapshot
from runtimestate.desired import schema


async def load_states(session: AsyncSession) -> dict[str, snapshot.LLMState]:
    """Every persisted backend state, in one query."""
    rows = await session.scalars(sa.select(schema.BackendStatusRow))
    states = {}
    for row in rows:
        state = snapshot.state_from_dict(row.document)
        if row.last_ok_at is not None:  # else a document from before the column: it has it
            state = dataclasses.replace(state, last_ok_at=row.last_ok_at)
        states[row.backend] = state
    return states


# Every field of a state but `last_ok_at`, as one tuple (compared in C: 1,000 states a cycle).
_COMPARED = operator.attrgetter(
    *(f.name for f in dataclasses.fields(snapshot.LLMState) if f.name != "last_ok_at")
)


def _same_but_last_ok(before: snapshot.LLMState, after: snapshot.LLMState) -> bool:
    return before is after or bool(_COMPARED(before) == _COMPARED(after))


async def write_states(
    session: AsyncSession,
    states: Mapping[str, snapshot.LLMState],
    previous: Mapping[str, snapshot.LLMState],
    now: dt.datetime,
) -> list[str]:
    """Persist the states that differ from ``previous`` and the `last_ok_at` of the others
    where it moved; drop rows of backends that are gone.

    Returns the names whose state changed other than in `last_ok_at` (what the caller
    publishes on NATS). Each kind of change is one statement for all rows, executed only
    when there is such a change.
    """
    changed: list[str] = []
    moved: list[str] = []
    for name, state in states.items():
        before = previous.get(name)
        if before is None or not _same_but_last_ok(before, state):
            changed.append(name)
        elif before.last_ok_at != state.last_ok_at:
            moved.append(name)
    if changed:
        await session.execute(_upsert(session), [_row(name, states[name], now) for name in changed])
    if moved:  # an ORM bulk UPDATE by primary key: one executemany
        await session.execute(
            sa.update(schema.BackendStatusRow),
            [{"backend": name, "last_ok_at": states[name].last_ok_at} for name in moved],
        )
    gone = set(previous) - set(states)
    if gone:
        await session.execute(
            sa.delete(schema.BackendStatusRow).where(schema.BackendStatusRow.backend.in_(gone))
        )
    return changed


async def write_state_observed(
    session: AsyncSession,
    state: snapshot.LLMState,
    previous: Mapping[str, snapshot.LLMState],
    *,
    observed_at: dt.datetime,
) -> bool | None:
    """Persist one backend's state observed at ``observed_at`` (as `write_states`, with
    ``previous`` holding at most its state before), unless the row already holds a state
    whose observation began later (a cycle's ``now`` is its row's `updated_at`): a newer
    status is never replaced by an older one. None when it gave way; else whether the state
    changed other than in `last_ok_at` (what the caller publishes)."""
    table = schema.BackendStatusRow
    stored = await session.scalar(
        sa.select(table.updated_at).where(table.backend == state.name).with_for_update()
    )
    if stored is not None and stored > observed_at:
        return None
    return bool(await write_states(session, {state.name: state}, previous, observed_at))


def _row(name: str, state: snapshot.LLMState, now: dt.datetime) -> dict[str, Any]:
    document = snapshot.state_to_dict(state)
    del document["last_ok_at"]  # its own column
    # Encoded now: a fleet's documents held as dicts until the upsert ran were its peak memory.
    encoded = database.EncodedJSON(json.dumps(document, separators=(",", ":")))
    return {
        "backend": name,
        "phase": state.phase.value,
        "observed_generation": state.observed_generation,
        "document": encoded,
        "updated_at": now,
        "last_ok_at": state.last_ok_at,
    }


def _upsert(session: AsyncSession) -> sa.Insert:
    """INSERT ... ON CONFLICT (backend) DO UPDATE, in the session's dialect."""
    table = schema.BackendStatusRow.__table__
    insert: Any = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
    statement = insert(table)
    columns = ("phase", "observed_generation", "document", "last_ok_at")
    updated = {c: statement.excluded[c] for c in columns}
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["backend"], set_={**updated, "updated_at": statement.excluded.updated_at}
    )


async def managed(session: AsyncSession) -> frozenset[tuple[str, str]]:
    """Every (backend, model key) llmctl pulled and has not seen removed since."""
    rows = await session.execute(
        sa.select(schema.ManagedModelRow.backend, schema.ManagedModelRow.model_key)
    )
    return frozenset((backend, key) for backend, key in rows)


async def record_pulled(
    session: AsyncSession,
    backend: str,
    model: str,
    model_key: str,
    job_id: str | None,
    now: dt.datetime,
) -> None:
    """Remember that llmctl pulled ``model`` onto ``backend``. Idempotent."""
    keys = {"backend": backend, "model_key": model_key}
    values = {"model": model, "job_id": job_id, "pulled_at": now}
    await database.upsert(session, schema.ManagedModelRow, keys, values)


async def forget(session: AsyncSession, backend: str, model_keys: Collection[str]) -> None:
    """Drop the record of models that were removed from ``backend``."""
    if model_keys:
        table = schema.ManagedModelRow
        await session.execute(
            sa.delete(table).where(table.backend == backend, table.model_key.in_(model_keys))
        )


async def forget_backends(session: AsyncSession, backends: Iterable[str]) -> None:
    """Drop every record of backends that are no longer declared."""
    names = list(backends)
    if names:
        table = schema.ManagedModelRow
        await session.execute(sa.delete(table).where(table.backend.in_(names)))
        lora = schema.ManagedAdapterRow
        await session.execute(sa.delete(lora).where(lora.backend.in_(names)))


# Adapters (issue 16): the LoRA adapters llmctl loaded, what `prune: managed` may unload.


async def managed_adapters(session: AsyncSession) -> frozenset[tuple[str, str]]:
    """Every (backend, adapter) llmctl loaded and has not unloaded since."""
    table = schema.ManagedAdapterRow
    rows = await session.execute(sa.select(table.backend, table.adapter))
    return frozenset((backend, adapter) for backend, adapter in rows)


async def record_loaded(
    session: AsyncSession, backend: str, adapter: str, now: dt.datetime
) -> None:
    """Remember that llmctl loaded ``adapter`` onto ``backend``. Idempotent."""
    keys = {"backend": backend, "adapter": adapter}
    await database.upsert(session, schema.ManagedAdapterRow, keys, {"loaded_at": now})


async def forget_adapter(session: AsyncSession, backend: str, adapter: str) -> None:
    """Drop the record of an adapter unloaded from ``backend``."""
    table = schema.ManagedAdapterRow
    await session.execute(
        sa.delete(table).where(table.backend == backend, table.adapter == adapter)
    )
