"""The status store: observed backend states, and the record of models llmctl pulled.

Called by the backend cycle (status written only where it changed), the download cycle (a
successful pull is recorded as made by llmctl, which the `managed` prune policy relies on), the
CLI and other processes (which read the persisted status). Functions take a session and never
commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import schema, snapshot


async def load_states(session: AsyncSession) -> dict[str, snapshot.LLMState]:
    """Every persisted backend state, in one query."""
    rows = await session.scalars(sa.select(schema.BackendStatusRow))
    return {row.backend: snapshot.state_from_dict(row.document) for row in rows}


async def write_states(
    session: AsyncSession,
    states: Mapping[str, snapshot.LLMState],
    previous: Mapping[str, snapshot.LLMState],
    now: dt.datetime,
) -> list[str]:
    """Persist the states that differ from ``previous``; drop rows of backends that are gone.

    Returns the names whose state changed (what the caller publishes on NATS).
    """
    changed = [name for name, state in states.items() if previous.get(name) != state]
    if changed:
        # One upsert executed for all rows, so a cycle sends the same number of statements
        # whatever the fleet size (every row changes each cycle: `last_ok_at` moves).
        rows = [
            {
                "backend": name,
                "phase": states[name].phase.value,
                "observed_generation": states[name].observed_generation,
                "document": snapshot.state_to_dict(states[name]),
                "updated_at": now,
            }
            for name in changed
        ]
        await session.execute(_upsert(session), rows)
    gone = set(previous) - set(states)
    if gone:
        await session.execute(
            sa.delete(schema.BackendStatusRow).where(schema.BackendStatusRow.backend.in_(gone))
        )
    return changed


def _upsert(session: AsyncSession) -> sa.Insert:
    """INSERT ... ON CONFLICT (backend) DO UPDATE, in the session's dialect."""
    table = schema.BackendStatusRow.__table__
    insert: Any = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
    statement = insert(table)
    updated = {c: statement.excluded[c] for c in ("phase", "observed_generation", "document")}
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
    table = schema.ManagedModelRow
    where = (table.backend == backend, table.model_key == model_key)
    values = {"model": model, "job_id": job_id, "pulled_at": now}
    updated = await session.execute(sa.update(table).where(*where).values(values))
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(
            sa.insert(table).values(backend=backend, model_key=model_key, **values)
        )


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
