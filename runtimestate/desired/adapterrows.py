"""Reading adapters and their pool memberships, and what every stored row shares: its `Meta`.

Called by `runtimestate.desired.store.load` (two queries, whatever the fleet size) and by
`runtimestate.desired.adapterstore`. Turns ORM rows into `runtimestate.desired.spec` values;
rows never leave the store modules. It writes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import echo
from runtimestate.desired import names, schema, spec


def meta(
    row: schema.BackendRow | schema.ModelRow | schema.PoolRow | schema.AdapterRow,
) -> spec.Meta:
    return spec.Meta(row.id, row.generation, row.created_at, row.updated_at)


def adapter(row: schema.AdapterRow) -> spec.Adapter:
    value = spec.AdapterSpec(row.name, row.base_model, row.source, row.revision, dict(row.labels))
    return spec.Adapter(value, meta(row))


def fill(row: schema.AdapterRow, value: spec.AdapterSpec) -> None:
    row.name, row.base_model, row.source = value.name, value.base_model, value.source
    row.revision, row.labels = value.revision, dict(value.labels)


@dataclasses.dataclass(frozen=True)
class Placed:
    """Every adapter (by name), each pool's adapters (by pool id, sorted) and the pool
    generation each membership joined at (by pool and adapter name)."""

    adapters: tuple[spec.Adapter, ...]
    members: Mapping[int, tuple[str, ...]]
    joined: Mapping[tuple[str, str], int]


async def load(session: AsyncSession, pool_names: Mapping[int, str]) -> Placed:
    """Every adapter and its memberships of the pools in ``pool_names`` (id: name)."""
    rows = (await session.scalars(sa.select(schema.AdapterRow))).all()
    pa = schema.PoolAdapterRow
    links = (
        await session.execute(sa.select(pa.pool_id, pa.adapter_id, pa.joined_generation))
    ).all()
    by_id = {row.id: row.name for row in rows}
    members: dict[int, list[str]] = {}
    joined: dict[tuple[str, str], int] = {}
    # A membership naming a row committed after the first query is skipped (see store.load).
    for pool_id, adapter_id, generation in links:
        if adapter_id in by_id and pool_id in pool_names:
            members.setdefault(pool_id, []).append(by_id[adapter_id])
            joined[pool_names[pool_id], by_id[adapter_id]] = generation
    return Placed(
        adapters=tuple(adapter(row) for row in sorted(rows, key=lambda r: r.name)),
        members={pool: tuple(sorted(found)) for pool, found in members.items()},
        joined=joined,
    )


def _candidates(model_names: Iterable[str]) -> set[str]:
    """The adapter names that could denote the same thing as these model names: a model
    ``sql`` or ``sql:latest`` and an adapter ``sql`` would both answer ``model=sql``."""
    found: set[str] = set()
    for name in model_names:
        found |= {name, name.removesuffix(":latest")}
    return found


async def clash(session: AsyncSession, model_names: Iterable[str]) -> str | None:
    """Why a model of one of ``model_names`` cannot be declared: a stored adapter has the name
    a client would send for it. None when there is no clash."""
    wanted = _candidates(model_names)
    if not wanted:
        return None
    found = await session.scalar(
        sa.select(schema.AdapterRow.name).where(schema.AdapterRow.name.in_(sorted(wanted)))
    )
    if found is None:
        return None
    return (
        f"adapter {echo.quoted(found)} already has that name (a client sends model={found} "
        "for it); pick another name or delete the adapter"
    )


async def based_on(session: AsyncSession, model_key: str) -> list[str]:
    """The stored adapters whose base model is the model of ``model_key`` (its Ollama key)."""
    rows = await session.execute(sa.select(schema.AdapterRow.name, schema.AdapterRow.base_model))
    return sorted(
        name for name, base in rows if names.key(base, spec.BackendType.OLLAMA) == model_key
    )
