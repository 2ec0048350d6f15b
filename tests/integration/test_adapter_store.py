"""Adapters, warm models and backend budgets in the store, on Postgres and SQLite."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.desired import adapterstore, poolstore, spec, store

QWEN = "qwen2:0.5b"


def _adapter(name: str = "sql-lora", **changes: object) -> spec.AdapterSpec:
    value = spec.AdapterSpec(name, QWEN, "/adapters/sql")
    return dataclasses.replace(value, **changes)  # type: ignore[arg-type]


def _backend(name: str = "gpu-1", **changes: object) -> spec.BackendSpec:
    value = spec.make_backend(name, "vllm", f"http://{name}.local:8000")
    return dataclasses.replace(value, **changes)  # type: ignore[arg-type]


async def _fleet(session: AsyncSession) -> None:
    await store.add_backend(session, _backend())
    await store.add_model(session, spec.ModelSpec(QWEN))


async def test_an_adapter_is_loaded_with_its_pools_and_placed_on_their_backends(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    (created,) = await adapterstore.add_adapters(session, [_adapter()], ["default"])
    await session.commit()
    assert created.meta.generation == 1
    state = await store.load(session)
    assert state.adapter("sql-lora") == created
    assert state.pool("default").spec.adapters == ("sql-lora",)  # type: ignore[union-attr]
    assert [a.name for a in state.adapters_for("gpu-1")] == ["sql-lora"]
    pool = state.pool("default")
    assert pool is not None
    assert state.adapter_joined(pool, "sql-lora") == pool.meta.generation
    assert state.adapters_joined[("default", "sql-lora")] == pool.meta.generation


async def test_an_adapter_on_an_undeclared_base_model_is_refused_naming_the_close_model(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    with pytest.raises(store.StoreError, match=r"baseModel: .*qwen2:0\.5b"):
        await adapterstore.add_adapters(session, [_adapter(base_model="qwen2:0.5")])


async def test_a_model_and_an_adapter_never_answer_to_the_same_name(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    await store.add_model(session, spec.ModelSpec("llama3"))
    with pytest.raises(store.StoreError, match="already answers to that name"):
        await adapterstore.add_adapters(session, [_adapter(name="llama3")])
    await adapterstore.add_adapters(session, [_adapter()])
    with pytest.raises(store.StoreError, match="adapter 'sql-lora' already has that name"):
        await store.add_model(session, spec.ModelSpec("sql-lora:latest"))
    with pytest.raises(store.StoreError, match="already has that name"):
        await store.add_models(session, [spec.ModelSpec("sql-lora")])


async def test_a_model_cannot_be_deleted_while_an_adapter_is_based_on_it(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    await adapterstore.add_adapters(session, [_adapter()])
    with pytest.raises(store.StoreError, match="base model of adapter sql-lora"):
        await store.delete_model(session, QWEN)
    await adapterstore.delete_adapter(session, "sql-lora")
    await store.delete_model(session, QWEN)
    assert (await store.load(session)).models == ()


async def test_an_adapter_change_bumps_its_generation_and_a_relabel_does_not(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    await adapterstore.add_adapters(session, [_adapter()])
    relabelled, changed = await adapterstore.update_adapter(session, _adapter(labels={"a": "b"}))
    assert changed
    assert relabelled.meta.generation == 1
    moved, changed = await adapterstore.update_adapter(
        session, _adapter(source="org/sql", revision="v2", labels={"a": "b"})
    )
    assert changed
    assert moved.meta.generation == 2
    same, changed = await adapterstore.update_adapter(session, moved.spec)
    assert not changed
    assert same.meta.generation == 2


async def test_pool_membership_of_an_adapter_can_be_added_and_removed(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    await adapterstore.add_adapters(session, [_adapter()])
    assert await poolstore.set_membership(session, "default", adapter="sql-lora", member=True)
    assert not await poolstore.set_membership(session, "default", adapter="sql-lora", member=True)
    assert (await poolstore.get_pool(session, "default")).spec.adapters == ("sql-lora",)
    assert await poolstore.set_membership(session, "default", adapter="sql-lora", member=False)
    with pytest.raises(store.NotFound, match="did you mean 'sql-lora'"):
        await poolstore.set_membership(session, "default", adapter="sql-lorb", member=True)


async def test_warm_keep_alive_and_budgets_are_written_and_read_back(
    session: AsyncSession,
) -> None:
    await store.add_backend(session, _backend(vram_bytes=24 * 2**30, disk_bytes=20 * 10**9))
    await store.add_model(session, spec.ModelSpec(QWEN, warm=True, keep_alive="1h30m"))
    await session.commit()
    state = await store.load(session)
    backend = state.backend("gpu-1")
    assert backend is not None
    assert (backend.spec.vram_bytes, backend.spec.disk_bytes) == (24 * 2**30, 20 * 10**9)
    model = state.model(QWEN)
    assert model is not None
    assert (model.spec.warm, model.spec.keep_alive) == (True, "1h30m")


async def test_a_bad_keep_alive_or_size_is_refused_before_anything_is_written(
    session: AsyncSession,
) -> None:
    with pytest.raises(spec.SpecError, match="keepAlive"):
        await store.add_model(session, spec.ModelSpec(QWEN, warm=True, keep_alive="soon"))
    with pytest.raises(spec.SpecError, match="diskBytes"):
        await store.add_backend(session, _backend(disk_bytes=0))
    assert (await store.load(session)).models == ()


async def _key_after(session: AsyncSession, write: object) -> tuple[object, ...]:
    await write  # type: ignore[misc]
    return (await store.load(session)).key_of("gpu-1")


async def test_the_backend_key_changes_with_every_residency_field_the_planner_compares(
    session: AsyncSession,
) -> None:
    await _fleet(session)
    keys = [(await store.load(session)).key_of("gpu-1")]
    steps = [
        adapterstore.add_adapters(session, [_adapter()], ["default"]),
        adapterstore.update_adapter(session, _adapter(source="/adapters/sql-v2")),
        store.update_model(session, spec.ModelSpec(QWEN, warm=True)),
        store.update_model(session, spec.ModelSpec(QWEN, warm=True, keep_alive="-1")),
        store.update_backend(session, _backend(vram_bytes=8 * 10**9)),
        store.update_backend(session, _backend(vram_bytes=8 * 10**9, disk_bytes=10**11)),
        poolstore.set_membership(session, "default", adapter="sql-lora", member=False),
    ]
    for step in steps:
        keys.append(await _key_after(session, step))
    assert len(set(keys)) == len(keys)
    assert (await store.load(session)).key_of("gpu-1") == keys[-1]
