"""Upgrades asked for by hand (table ``upgrade_requests``, issue 19).

``llmctl model upgrade NAME [--backend B]`` records a request (`record`: the model's canonical
name and the backend, ``""`` for every backend); the backend cycle of any replica reads them
(`load`), rolls those copies as it rolls an ``auto`` model's, and deletes a request once no
backend it names holds an old copy (`forget`). Functions take a session and never commit; they
must not read or write any other table. Called by `runtimestate.reconcile.rolling` and
`controller.modelupgrades`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import database
from runtimestate.desired import schema


async def record(session: AsyncSession, model: str, backend: str, now: dt.datetime) -> None:
    """Ask for the upgrade of ``model`` (a canonical name) on ``backend`` (``""``: every
    backend). Idempotent: asking again moves the time."""
    keys = {"model": model, "backend": backend}
    await database.upsert(session, schema.UpgradeRequestRow, keys, {"requested_at": now})


async def load(session: AsyncSession) -> frozenset[tuple[str, str]]:
    """Every request, as (model canonical name, backend or ``""``)."""
    row = schema.UpgradeRequestRow
    found = await session.execute(sa.select(row.model, row.backend))
    return frozenset((str(model), str(backend)) for model, backend in found.all())


async def forget(session: AsyncSession, requests: Iterable[tuple[str, str]]) -> None:
    """Delete the requests given (those already gone are ignored)."""
    row = schema.UpgradeRequestRow
    for model, backend in requests:
        await session.execute(sa.delete(row).where(row.model == model, row.backend == backend))
