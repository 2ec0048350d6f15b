"""Pool memberships: the one writer of the rows that join a backend, model or adapter to a pool.

`replace` makes the memberships of one member (a backend or a model: its pools vary) or of one
pool (its members vary) exactly a wanted set, and dates each new membership with the pool
generation it joined at (`joined_generation`, which dates the declarations it makes; see
`runtimestate.reconcile.planview`). Memberships are only inserted and deleted, never rewritten.

Called by the store modules only (`store` for a backend's or model's pools, `poolstore` for a
pool's members). It works on row ids: callers resolve names and raise `store.NotFound`. It takes
the caller's session and never commits.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.desired import schema

Table = type[schema.PoolBackendRow] | type[schema.PoolModelRow] | type[schema.PoolAdapterRow]


async def replace(
    session: AsyncSession,
    table: Table,
    wanted: Collection[int],
    *,
    member: int | None = None,
    pool: int | None = None,
    joined: int | None = None,
) -> bool:
    """Make the memberships in ``table`` of ``member`` (``wanted``: pool ids) or of ``pool``
    (``wanted``: backend or model ids) exactly ``wanted``. Memberships that stay are left
    untouched; returns whether any was added or removed.

    Of a member: every pool it joins or leaves is bumped (its spec lists the member), and a new
    membership is dated with its pool's generation after that bump. Of a pool: a new membership
    is dated ``joined``, and the pool is not bumped here: its caller writes the rest of the
    pool's spec and bumps it once for the whole write.
    """
    members = _members(table)
    if member is not None and pool is None and joined is None:
        fixed, varying, owner = members, table.pool_id, member
    elif pool is not None and member is None and joined is not None:
        fixed, varying, owner = table.pool_id, members, pool
    else:
        raise TypeError("replace takes a member, or a pool and the generation its members join")
    mine = fixed == owner
    current = set((await session.scalars(sa.select(varying).where(mine))).all())
    wanted = set(wanted)
    if gone := current - wanted:
        await session.execute(sa.delete(table).where(mine, varying.in_(gone)))
    added = sorted(wanted - current)
    if joined is None:  # a member's pools
        await _touch_pools(session, current ^ wanted)
        dated = await _generations(session, added)
        new = [{"pool_id": p, members.key: owner, "joined_generation": dated[p]} for p in added]
    else:  # a pool's members
        new = [{"pool_id": owner, members.key: m, "joined_generation": joined} for m in added]
    if new:
        await session.execute(sa.insert(table), new)
    return current != wanted


def _members(table: Table) -> orm.InstrumentedAttribute[int]:
    """The membership's column naming the member: ``backend_id``, ``model_id`` or
    ``adapter_id``."""
    if issubclass(table, schema.PoolBackendRow):
        return table.backend_id
    if issubclass(table, schema.PoolAdapterRow):
        return table.adapter_id
    return table.model_id


async def _touch_pools(session: AsyncSession, pool_ids: Iterable[int]) -> None:
    ids = list(pool_ids)
    if ids:
        await session.execute(
            sa.update(schema.PoolRow)
            .where(schema.PoolRow.id.in_(ids))
            .values(generation=schema.PoolRow.generation + 1, updated_at=schema.utcnow())
        )


async def _generations(session: AsyncSession, pool_ids: Collection[int]) -> dict[int, int]:
    """The stored generation of each pool, read after this transaction's bumps."""
    if not pool_ids:
        return {}
    rows = await session.execute(
        sa.select(schema.PoolRow.id, schema.PoolRow.generation).where(
            schema.PoolRow.id.in_(pool_ids)
        )
    )
    return {pool_id: generation for pool_id, generation in rows}
