"""The pool store: creating, reading, updating and deleting pools, and joining one member.

Called by the CLI (``llmctl pool ...``) and the manifest (apply). Every function takes an
``AsyncSession`` and never commits; names are resolved here (`store.NotFound` names the missing
one) and the membership rows are written by `runtimestate.desired.memberships`. A pool's
generation goes up once per write that changes its spec (purpose, labels or members: backends,
models and adapters). It must not write backends, models or adapters themselves (the store
modules do), and its ORM rows never leave it: callers get `runtimestate.desired.spec` values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.desired import memberships, names, residency, schema, spec, store


async def create_pool(session: AsyncSession, value: spec.PoolSpec) -> spec.Pool:
    """Create a pool with the members its spec lists; raises `AlreadyExists` or `NotFound`."""
    value = residency.validate_pool(value)
    if await session.scalar(sa.select(schema.PoolRow.id).where(schema.PoolRow.name == value.name)):
        raise store.AlreadyExists("pool", value.name)
    row = schema.PoolRow(name=value.name, purpose=value.purpose, labels=dict(value.labels))
    session.add(row)
    await session.flush()
    await _set_members(session, row, value, joined=row.generation)
    return await get_pool(session, value.name)


async def update_pool(session: AsyncSession, value: spec.PoolSpec) -> tuple[spec.Pool, bool]:
    """Set a pool's purpose, labels and members exactly as ``value`` says."""
    value = residency.validate_pool(value)
    before = await get_pool(session, value.name)
    row = await store.pool_row(session, value.name)
    row.purpose, row.labels = value.purpose, dict(value.labels)
    # A member joins only in a write that changes the spec, which bumps the generation below.
    await _set_members(session, row, value, joined=row.generation + 1)
    after = await get_pool(session, value.name)
    changed = before.spec != after.spec
    if changed:
        store.touch(row)
        await session.flush()
        after = await get_pool(session, value.name)
    return after, changed


async def _ids(
    session: AsyncSession,
    column: sa.orm.InstrumentedAttribute[str],
    spelled: Mapping[str, str],
    kind: str,
) -> dict[str, int]:
    """Map names (or canonical model names) to row ids in one query; raises `NotFound` naming
    the first missing one as ``spelled`` (key: the name as given) spells it."""
    table = column.class_
    rows = await session.execute(sa.select(column, table.id).where(column.in_(list(spelled))))
    found: dict[str, int] = {name: row_id for name, row_id in rows}
    for key, name in spelled.items():
        if key not in found:
            raise await store.absent(session, kind, name)
    return found


async def _set_members(
    session: AsyncSession, row: schema.PoolRow, value: spec.PoolSpec, *, joined: int
) -> None:
    """Make the pool's memberships exactly ``value``'s members. Memberships that stay are left
    untouched (they keep their `joined_generation`); new ones are dated ``joined``."""
    spelled = {b: b for b in value.backends}
    backend_ids = await _ids(session, schema.BackendRow.name, spelled, "backend")
    keys: dict[str, str] = {names.key(m, spec.BackendType.OLLAMA): m for m in value.models}
    model_ids = await _ids(session, schema.ModelRow.canonical_name, keys, "model")
    adapters = {a: a for a in value.adapters}
    adapter_ids = await _ids(session, schema.AdapterRow.name, adapters, "adapter")
    for table, wanted in (
        (schema.PoolBackendRow, backend_ids.values()),
        (schema.PoolModelRow, model_ids.values()),
        (schema.PoolAdapterRow, adapter_ids.values()),
    ):
        await memberships.replace(session, table, set(wanted), pool=row.id, joined=joined)
    await session.flush()


async def get_pool(session: AsyncSession, name: str) -> spec.Pool:
    row = await store.pool_row(session, name)
    backends = await session.scalars(
        sa.select(schema.BackendRow.name)
        .join(schema.PoolBackendRow, schema.PoolBackendRow.backend_id == schema.BackendRow.id)
        .where(schema.PoolBackendRow.pool_id == row.id)
    )
    models = await session.scalars(
        sa.select(schema.ModelRow.name)
        .join(schema.PoolModelRow, schema.PoolModelRow.model_id == schema.ModelRow.id)
        .where(schema.PoolModelRow.pool_id == row.id)
    )
    adapters = await session.scalars(
        sa.select(schema.AdapterRow.name)
        .join(schema.PoolAdapterRow, schema.PoolAdapterRow.adapter_id == schema.AdapterRow.id)
        .where(schema.PoolAdapterRow.pool_id == row.id)
    )
    value = spec.PoolSpec(
        row.name, row.purpose, tuple(sorted(backends)), tuple(sorted(models)), dict(row.labels),
        tuple(sorted(adapters)),
    )  # fmt: skip
    return spec.Pool(value, store.meta(row))


async def delete_pool(session: AsyncSession, name: str) -> None:
    """Delete a pool and its memberships (not its backends or models).

    The ``default`` pool cannot be deleted: ``backend add`` and ``model add`` rely on it.
    """
    if name == spec.DEFAULT_POOL:
        raise store.StoreError("the default pool cannot be deleted; remove its members instead")
    row = await store.pool_row(session, name)
    for table in (schema.PoolBackendRow, schema.PoolModelRow, schema.PoolAdapterRow):
        await memberships.replace(session, table, (), pool=row.id, joined=row.generation)
    await session.delete(row)
    await session.flush()


async def set_membership(
    session: AsyncSession,
    pool: str,
    *,
    backend: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    member: bool,
) -> bool:
    """Add (``member=True``) or remove one backend, model or adapter of a pool. Idempotent.

    Returns whether anything changed; the pool's generation goes up when it did.
    """
    current = await get_pool(session, pool)
    if backend is not None:
        await store.backend_row(session, backend)
        members = set(current.spec.backends)
        members = members | {backend} if member else members - {backend}
        value = dataclasses.replace(current.spec, backends=tuple(members))
    elif adapter is not None:
        found = await session.scalar(
            sa.select(schema.AdapterRow.name).where(schema.AdapterRow.name == adapter)
        )
        if found is None:
            raise await store.absent(session, "adapter", adapter)
        members = set(current.spec.adapters)
        members = members | {adapter} if member else members - {adapter}
        value = dataclasses.replace(current.spec, adapters=tuple(members))
    else:
        assert model is not None
        row = await store.model_row(session, model)
        members = set(current.spec.models)
        members = members | {row.name} if member else members - {row.name}
        value = dataclasses.replace(current.spec, models=tuple(members))
    _, changed = await update_pool(session, value)
    return changed
