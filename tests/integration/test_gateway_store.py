"""The gateway's key and price stores (`gateway.keystore`, `gateway.pricestore`) on SQLite and
Postgres: keys by hash, revocation, spend added in batches, prices."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import keys, keystore, prices, pricestore
from runtimestate import database
from runtimestate.desired import refusals

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


async def _create(session: AsyncSession, value: keys.KeySpec) -> tuple[keys.Key, str]:
    secret = keys.new_secret()
    key = await keystore.create(session, value, keys.digest(secret), keys.prefix(secret), T0)
    return key, secret


async def test_a_key_is_stored_by_its_hash_and_read_back_whole(session: AsyncSession) -> None:
    value = keys.KeySpec("alice", ("llama3",), ("default",), 600, 50_000, 25_000_000,
                         keys.Period.MONTH)  # fmt: skip
    created, secret = await _create(session, value)
    await session.commit()
    got = await keystore.get(session, "alice")
    assert got == created
    assert got.spec == value
    assert got.secret_sha256 == keys.digest(secret)
    assert got.prefix == secret[:11]
    assert got.created_at == T0
    assert not got.revoked
    assert [k.name for k in await keystore.active(session)] == ["alice"]


async def test_a_taken_name_or_a_missing_pool_is_refused(session: AsyncSession) -> None:
    await _create(session, keys.KeySpec("alice"))
    with pytest.raises(keys.KeyRefused, match="key alice already exists"):
        await _create(session, keys.KeySpec("alice"))
    with pytest.raises(refusals.NotFound, match="pool 'defualt' does not exist; did you mean"):
        await _create(session, keys.KeySpec("bob", pools=("defualt",)))
    with pytest.raises(refusals.NotFound, match="key 'alcie' does not exist; did you mean"):
        await keystore.get(session, "alcie")


async def test_an_update_sets_what_a_key_allows_and_says_whether_it_changed(
    session: AsyncSession,
) -> None:
    created, _ = await _create(session, keys.KeySpec("alice", rpm=10))
    new = keys.KeySpec("alice", ("qwen2:0.5b",), (), None, 100)
    updated, changed = await keystore.update(session, new)
    assert changed
    assert updated.spec == new
    assert updated.secret_sha256 == created.secret_sha256
    assert (await keystore.update(session, new))[1] is False


async def test_a_revoked_key_stays_listed_but_is_no_longer_active_nor_changeable(
    session: AsyncSession,
) -> None:
    await _create(session, keys.KeySpec("alice"))
    await _create(session, keys.KeySpec("bob"))
    assert await keystore.revoke(session, "alice", T0) is True
    assert await keystore.revoke(session, "alice", T0) is False
    assert [k.name for k in await keystore.active(session)] == ["bob"]
    listed = await keystore.all_keys(session)
    assert [(k.name, k.revoked_at) for k in listed] == [("alice", T0), ("bob", None)]
    with pytest.raises(keys.KeyRefused, match="alice is revoked"):
        await keystore.update(session, keys.KeySpec("alice", rpm=5))


async def test_spend_batches_add_up_per_key_and_period(session: AsyncSession) -> None:
    alice, _ = await _create(session, keys.KeySpec("alice"))
    bob, _ = await _create(session, keys.KeySpec("bob"))
    await keystore.add_spend(session, {(alice.id, "2026-12"): 5, (bob.id, "2026-12"): 7}, T0)
    await keystore.add_spend(session, {(alice.id, "2026-12"): 10**15, (alice.id, "2027-01"): 1}, T0)
    await keystore.add_spend(session, {(999, "2026-12"): 3}, T0)  # a key deleted since
    await session.commit()
    assert await keystore.spent(session, alice.id, "2026-12") == 10**15 + 5
    assert await keystore.spent(session, alice.id, "2027-01") == 1
    assert await keystore.spent(session, bob.id, "2026-12") == 7
    assert await keystore.spent(session, bob.id, "2027-01") == 0


async def test_spend_added_by_two_replicas_at_once_loses_nothing(migrated_url: str) -> None:
    engine = database.create_async_engine(migrated_url)
    try:
        factory = database.session_factory(engine)
        async with factory() as session, session.begin():
            alice, _ = await _create(session, keys.KeySpec("alice"))

        async def replica(amount: int) -> None:
            for _ in range(5):
                async with factory() as session, session.begin():
                    await keystore.add_spend(session, {(alice.id, "all"): amount}, T0)

        await asyncio.gather(replica(1), replica(100))
        async with factory() as session:
            assert await keystore.spent(session, alice.id, "all") == 505
    finally:
        await engine.dispose()


async def test_prices_are_set_changed_listed_and_deleted(session: AsyncSession) -> None:
    llama = prices.Price("llama3", 150_000, 600_000)
    assert await pricestore.set_price(session, llama, T0) is None
    assert await pricestore.set_price(session, llama, T0) is False
    cheaper = prices.Price("llama3", 100_000, 600_000)
    assert await pricestore.set_price(session, cheaper, T0) is True
    await pricestore.set_price(session, prices.Price("gpt-4o", 2_500_000, 10_000_000), T0)
    assert [p.model for p in await pricestore.all_prices(session)] == ["gpt-4o", "llama3"]
    assert (await pricestore.table(session))["llama3"] == cheaper
    await pricestore.delete_price(session, "llama3")
    assert list(await pricestore.table(session)) == ["gpt-4o"]
    with pytest.raises(refusals.NotFound, match="price 'llama3' does not exist"):
        await pricestore.delete_price(session, "llama3")
    with pytest.raises(prices.PriceRefused, match="is not a model name"):
        await pricestore.set_price(session, prices.Price(" ", 1, 1), T0)


async def test_the_key_marker_moves_with_every_creation_real_update_and_revocation(
    session: AsyncSession,
) -> None:
    seen = [await keystore.marker(session)]
    await _create(session, keys.KeySpec("alice", policy="sticky"))
    seen.append(await keystore.marker(session))
    await keystore.update(session, keys.KeySpec("alice", rpm=5, policy="adaptive"))
    seen.append(await keystore.marker(session))
    await keystore.update(session, keys.KeySpec("alice", rpm=5, policy="adaptive"))
    unchanged = await keystore.marker(session)
    await keystore.revoke(session, "alice", T0)
    seen.append(await keystore.marker(session))
    assert len(set(seen)) == 4
    assert unchanged == seen[2]
    assert (await keystore.get(session, "alice")).spec.policy == "adaptive"


async def test_spending_reads_every_key_in_the_periods_asked(session: AsyncSession) -> None:
    alice, _ = await _create(session, keys.KeySpec("alice"))
    bob, _ = await _create(session, keys.KeySpec("bob"))
    await keystore.add_spend(
        session, {(alice.id, "2026-12"): 5, (bob.id, "all"): 7, (bob.id, "2026-11"): 9}, T0
    )
    got = await keystore.spending(session, ("2026-12", "all"))
    assert got == {(alice.id, "2026-12"): 5, (bob.id, "all"): 7}
