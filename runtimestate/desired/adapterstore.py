"""The adapter store: creating, reading, updating and deleting LoRA adapters.

Called by the CLI (``llmctl adapter ...``) and the manifest (apply, delete -f). Every function
takes an ``AsyncSession`` and never commits. Specs are validated here (`residency`), and so is
what only the stored state can tell: the base model must be a declared model (a missing one is
`store.NotFound` with the close names), and no declared model may answer to the adapter's name.
An adapter's pools are written by `runtimestate.desired.memberships`; its generation goes up on
a change of its spec but its labels. It must not write backends, models or pools themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import echo
from runtimestate.desired import adapterrows, memberships, names, residency, schema, spec, store


async def adapter_row(session: AsyncSession, name: str) -> schema.AdapterRow:
    row = await session.scalar(sa.select(schema.AdapterRow).where(schema.AdapterRow.name == name))
    if row is None:
        raise await store.absent(session, "adapter", name)
    return row


async def get_adapter(session: AsyncSession, name: str) -> spec.Adapter:
    """The stored adapter; raises `store.NotFound`."""
    return adapterrows.adapter(await adapter_row(session, name))


async def _check(session: AsyncSession, values: Sequence[spec.AdapterSpec]) -> None:
    """Every base model is declared, and no declared model answers to an adapter's name."""
    for value in values:
        try:
            await store.model_row(session, value.base_model)
        except store.NotFound as exc:  # it names the close models
            raise store.StoreError(f"baseModel: {exc}") from None
    wanted = {key: v.name for v in values if (key := _as_model(v.name)) is not None}
    taken = await session.scalar(
        sa.select(schema.ModelRow.name).where(schema.ModelRow.canonical_name.in_(list(wanted)))
    )
    if taken is not None:
        name = wanted[names.key(taken, spec.BackendType.OLLAMA)]
        raise store.StoreError(
            f"adapter {echo.quoted(name)}: model {echo.quoted(taken)} already answers to that "
            "name; pick another name for the adapter"
        )


def _as_model(name: str) -> str | None:
    """The model key a client's ``model=name`` would denote, if the name is one (a name
    longer than a model part is not)."""
    try:
        return names.key(name, spec.BackendType.OLLAMA)
    except names.InvalidName:
        return None


async def add_adapters(
    session: AsyncSession,
    values: Sequence[spec.AdapterSpec],
    pools: Sequence[str] = (),
) -> list[spec.Adapter]:
    """Create adapters at generation 1, each joined to ``pools``; raises `spec.SpecError`,
    `store.AlreadyExists`, `store.NotFound` (a base model or pool) or `store.StoreError`."""
    values = [residency.validate_adapter(value) for value in values]
    taken = await session.scalar(
        sa.select(schema.AdapterRow.name).where(
            schema.AdapterRow.name.in_([v.name for v in values])
        )
    )
    if taken is not None:
        raise store.AlreadyExists("adapter", taken)
    await _check(session, values)
    pool_ids = [(await store.pool_row(session, name)).id for name in dict.fromkeys(pools)]
    rows = []
    for value in values:
        row = schema.AdapterRow()
        adapterrows.fill(row, value)
        rows.append(row)
    session.add_all(rows)
    await session.flush()
    if pool_ids:
        for row in rows:
            await memberships.replace(session, schema.PoolAdapterRow, pool_ids, member=row.id)
        await session.flush()
    return [adapterrows.adapter(row) for row in rows]


async def update_adapter(
    session: AsyncSession, value: spec.AdapterSpec, pools: Sequence[str] | None = None
) -> tuple[spec.Adapter, bool]:
    """Replace adapter ``value.name``'s spec, and its pools exactly when ``pools`` is given.
    Returns the adapter and whether anything changed."""
    value = residency.validate_adapter(value)
    row = await adapter_row(session, value.name)
    before = adapterrows.adapter(row).spec
    if before.base_model != value.base_model:
        await _check(session, [value])
    adapterrows.fill(row, value)
    changed = before != value
    if dataclasses.replace(before, labels={}) != dataclasses.replace(value, labels={}):
        store.touch(row)
    elif changed:  # labels are metadata, as for models
        row.updated_at = schema.utcnow()
    if pools is not None:
        pool_ids = [(await store.pool_row(session, name)).id for name in dict.fromkeys(pools)]
        table = schema.PoolAdapterRow
        changed = await memberships.replace(session, table, pool_ids, member=row.id) or changed
    await session.flush()
    return adapterrows.adapter(row), changed


async def delete_adapter(session: AsyncSession, name: str) -> None:
    """Delete an adapter and its memberships; where it is loaded, the cycle unloads it per the
    backend's prune policy."""
    row = await adapter_row(session, name)
    await memberships.replace(session, schema.PoolAdapterRow, (), member=row.id)
    await session.delete(row)
    await session.flush()
