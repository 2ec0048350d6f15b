"""The key store: virtual API keys and what each spent per budget period.

Called by the ``llmctl key`` commands (create, read, update, revoke) and by the gateway
(`active` to build its `gateway.keyring.Keyring`, `marker` to learn that keys changed,
`add_spend` for its batches of costs, `spent` and `spending` to read spend back). Async
functions over an `AsyncSession`; the caller owns the transaction, nothing here commits. A
secret never reaches this module: only its SHA-256 and prefix. Raises `gateway.keys.KeyRefused`
and the store's `refusals.NotFound` (both exit 2 in the CLI).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import keys, schema
from runtimestate.desired import refusals
from runtimestate.desired import schema as desired_schema


def _value(row: schema.KeyRow) -> keys.Key:
    spec = keys.KeySpec(
        row.name, tuple(row.models), tuple(row.pools), row.rpm, row.tpm,
        row.budget_microusd, keys.Period(row.period), row.policy,
    )  # fmt: skip
    return keys.Key(row.id, spec, row.secret_sha256, row.prefix, row.created_at, row.revoked_at)


async def _row(session: AsyncSession, name: str) -> schema.KeyRow:
    row = await session.scalar(sa.select(schema.KeyRow).where(schema.KeyRow.name == name))
    if row is None:
        raise refusals.missing("key", name, await session.scalars(sa.select(schema.KeyRow.name)))
    return row


async def _check_pools(session: AsyncSession, pools: Sequence[str]) -> None:
    stored = set(await session.scalars(sa.select(desired_schema.PoolRow.name)))
    for pool in pools:
        if pool not in stored:
            raise refusals.missing("pool", pool, stored)


def _write(row: schema.KeyRow, value: keys.KeySpec) -> None:
    row.models, row.pools = list(value.models), list(value.pools)
    row.rpm, row.tpm = value.rpm, value.tpm
    row.budget_microusd, row.period = value.budget_microusd, value.period.value
    row.policy = value.policy


async def create(
    session: AsyncSession, value: keys.KeySpec, secret_sha256: str, prefix: str, now: dt.datetime
) -> keys.Key:
    """Store a new key by the hash of its secret; `KeyRefused` if the name is taken
    (revoked keys keep theirs), `NotFound` for a pool that does not exist."""
    value = keys.check(value)
    if await session.scalar(sa.select(schema.KeyRow.id).where(schema.KeyRow.name == value.name)):
        raise keys.KeyRefused(f"key {value.name} already exists; pick another name")
    await _check_pools(session, value.pools)
    row = schema.KeyRow(name=value.name, secret_sha256=secret_sha256, prefix=prefix, created_at=now)
    _write(row, value)
    session.add(row)
    await session.flush()
    return _value(row)


async def get(session: AsyncSession, name: str) -> keys.Key:
    """The key named ``name``, revoked or not; `NotFound` with close names otherwise."""
    return _value(await _row(session, name))


async def all_keys(session: AsyncSession) -> list[keys.Key]:
    """Every key, revoked ones included, by name."""
    rows = await session.scalars(sa.select(schema.KeyRow).order_by(schema.KeyRow.name))
    return [_value(row) for row in rows]


async def active(session: AsyncSession) -> list[keys.Key]:
    """The keys a request may present: every key not revoked."""
    rows = await session.scalars(sa.select(schema.KeyRow).where(schema.KeyRow.revoked_at.is_(None)))
    return [_value(row) for row in rows]


async def update(session: AsyncSession, value: keys.KeySpec) -> tuple[keys.Key, bool]:
    """Set what a key allows exactly as ``value`` says; whether anything changed. A revoked
    key cannot change (`KeyRefused`)."""
    value = keys.check(value)
    row = await _row(session, value.name)
    if row.revoked_at is not None:
        raise keys.KeyRefused(f"key {value.name} is revoked; create a new key instead")
    await _check_pools(session, value.pools)
    before = _value(row).spec
    _write(row, value)
    if before != value:
        row.generation = (row.generation or 1) + 1
    await session.flush()
    return _value(row), before != value


async def revoke(session: AsyncSession, name: str, now: dt.datetime) -> bool:
    """Revoke a key for good (its row stays, for the record); False if it already was."""
    row = await _row(session, name)
    if row.revoked_at is not None:
        return False
    row.revoked_at = now
    row.generation = (row.generation or 1) + 1
    await session.flush()
    return True


async def marker(session: AsyncSession) -> tuple[int, int]:
    """What changes whenever any key is created, updated or revoked: the number of keys and
    the sum of their generations. Cheap (one aggregate): gateways poll it."""
    count, total = (
        await session.execute(
            sa.select(sa.func.count(schema.KeyRow.id), sa.func.sum(schema.KeyRow.generation))
        )
    ).one()
    return int(count or 0), int(total or 0)


async def add_spend(
    session: AsyncSession, amounts: Mapping[tuple[int, str], int], now: dt.datetime
) -> None:
    """Add a batch of costs (pico-USD per key id and period) to the stored spend, atomically
    per row, so replicas adding at once lose nothing. Spend of a deleted key is dropped."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    existing = set(await session.scalars(sa.select(schema.KeyRow.id)))
    table = schema.KeySpendRow.__table__
    for (key_id, period), amount in sorted(amounts.items()):
        if key_id not in existing or amount == 0:
            continue
        insert = dialect.insert(table).values(
            key_id=key_id, period=period, spent_picousd=amount, updated_at=now
        )
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["key_id", "period"],
                set_={"spent_picousd": table.c.spent_picousd + amount, "updated_at": now},
            )
        )


async def spent(session: AsyncSession, key_id: int, period: str) -> int:
    """What the key spent in ``period`` (pico-USD); 0 when nothing was recorded."""
    amount = await session.scalar(
        sa.select(schema.KeySpendRow.spent_picousd).where(
            schema.KeySpendRow.key_id == key_id, schema.KeySpendRow.period == period
        )
    )
    return amount or 0


async def spending(session: AsyncSession, periods: Sequence[str]) -> dict[tuple[int, str], int]:
    """Every key's spend in any of ``periods`` (pico-USD by key id and period), for the
    gateway to read back what every replica added."""
    rows = await session.execute(
        sa.select(
            schema.KeySpendRow.key_id, schema.KeySpendRow.period, schema.KeySpendRow.spent_picousd
        ).where(schema.KeySpendRow.period.in_(list(periods)))
    )
    return {(key_id, period): amount for key_id, period, amount in rows}
