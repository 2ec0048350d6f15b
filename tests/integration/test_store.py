"""The desired-state store on Postgres and SQLite: one code path, the same behaviour."""

from __future__ import annotations

import dataclasses
import inspect

import greenlet  # type: ignore[import-untyped]  # no stubs; SQLAlchemy runs statements in one
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import credentials
from runtimestate.desired import poolstore, spec, store


def _backend(name: str = "gpu-1", **changes: object) -> spec.BackendSpec:
    values: dict[str, object] = {"type": "ollama", "url": f"http://{name}.local:11434"}
    values.update(changes)
    return spec.make_backend(name, **values)  # type: ignore[arg-type]


async def test_a_new_backend_starts_at_generation_one_in_the_default_pool(
    session: AsyncSession,
) -> None:
    created = await store.add_backend(session, _backend())
    await session.commit()
    assert created.meta.generation == 1
    state = await store.load(session)
    assert state.pools_of_backend("gpu-1") == ("default",)
    assert created.meta.created_at.tzinfo is not None


async def test_a_real_change_bumps_the_generation_and_a_no_op_does_not(
    session: AsyncSession,
) -> None:
    await store.add_backend(session, _backend())
    updated, changed = await store.update_backend(session, _backend(max_pulls=3))
    assert changed
    assert updated.meta.generation == 2
    again, changed = await store.update_backend(session, _backend(max_pulls=3))
    assert not changed
    assert again.meta.generation == 2


async def test_a_new_encrypted_key_counts_as_a_change(session: AsyncSession) -> None:
    key = credentials.Credentials(credentials.CredentialKind.ENCRYPTED, ciphertext="token-1")
    await store.add_backend(session, _backend(type="openai", credentials=key))
    rotated = dataclasses.replace(key, ciphertext="token-2")
    updated, changed = await store.update_backend(
        session, _backend(type="openai", credentials=rotated)
    )
    assert changed
    assert updated.meta.generation == 2
    stored = (await store.get_backend(session, "gpu-1")).spec.credentials
    assert stored is not None
    assert stored.ciphertext == "token-2"


async def test_duplicate_backends_are_refused(session: AsyncSession) -> None:
    await store.add_backend(session, _backend())
    with pytest.raises(store.AlreadyExists, match="backend 'gpu-1' already exists"):
        await store.add_backend(session, _backend())


async def test_a_model_under_another_spelling_is_a_duplicate(session: AsyncSession) -> None:
    await store.add_model(session, spec.ModelSpec("llama3:latest"))
    with pytest.raises(store.AlreadyExists, match="as 'llama3:latest'"):
        await store.add_model(session, spec.ModelSpec("Llama3"))
    found = await store.get_model(session, "llama3")
    assert found.name == "llama3:latest"


async def test_references_to_missing_pools_are_refused(session: AsyncSession) -> None:
    with pytest.raises(store.NotFound, match="pool 'gpu' does not exist"):
        await store.add_backend(session, _backend(), pools=["gpu"])


async def test_desired_models_are_the_union_of_the_backend_pools(session: AsyncSession) -> None:
    await store.add_backend(session, _backend("gpu-1"), pools=())
    await store.add_backend(session, _backend("gpu-2"), pools=())
    for name in ("llama3", "qwen2:0.5b", "nomic-embed-text"):
        await store.add_model(session, spec.ModelSpec(name), pools=())
    await poolstore.create_pool(session, spec.PoolSpec("chat", "", ("gpu-1", "gpu-2"), ("llama3",)))
    await poolstore.create_pool(
        session, spec.PoolSpec("small", "", ("gpu-1",), ("qwen2:0.5b", "llama3:latest"))
    )
    state = await store.load(session)
    assert [m.name for m in state.models_for("gpu-1")] == ["llama3", "qwen2:0.5b"]
    assert [m.name for m in state.models_for("gpu-2")] == ["llama3"]


async def test_membership_changes_bump_the_pool_generation_and_are_idempotent(
    session: AsyncSession,
) -> None:
    await store.add_backend(session, _backend(), pools=())
    before = await poolstore.get_pool(session, "default")
    assert await poolstore.set_membership(session, "default", backend="gpu-1", member=True)
    assert not await poolstore.set_membership(session, "default", backend="gpu-1", member=True)
    after = await poolstore.get_pool(session, "default")
    assert after.spec.backends == ("gpu-1",)
    assert after.meta.generation == before.meta.generation + 1


async def test_deleting_a_backend_removes_its_memberships(session: AsyncSession) -> None:
    await store.add_backend(session, _backend())
    await store.delete_backend(session, "gpu-1")
    assert (await poolstore.get_pool(session, "default")).spec.backends == ()
    with pytest.raises(store.NotFound):
        await store.get_backend(session, "gpu-1")


async def test_the_default_pool_cannot_be_deleted(session: AsyncSession) -> None:
    with pytest.raises(store.StoreError, match="default pool cannot be deleted"):
        await poolstore.delete_pool(session, "default")


async def test_store_functions_never_commit(session: AsyncSession) -> None:
    await store.add_backend(session, _backend())
    await session.rollback()
    assert (await store.load(session)).backends == ()


@pytest.mark.parametrize("fleet", [2, 40])
async def test_loading_the_desired_state_takes_the_same_queries_whatever_the_fleet(
    session: AsyncSession, fleet: int
) -> None:
    for index in range(fleet):
        await store.add_backend(session, _backend(f"gpu-{index}"))
        await store.add_model(session, spec.ModelSpec(f"model-{index}"))
    await session.commit()
    statements: list[str] = []
    sync_engine = session.bind.sync_engine  # type: ignore[union-attr]

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        state = await store.load(session)
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert len(state.backends) == fleet
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 7


async def test_a_membership_is_dated_with_its_pool_generation_whichever_side_writes_it(
    session: AsyncSession,
) -> None:
    await poolstore.create_pool(session, spec.PoolSpec("gpu"))
    for name in ("gpu-1", "gpu-2"):
        await store.add_backend(session, _backend(name), pools=())
    await store.update_backend(session, _backend("gpu-1"), pools=["gpu"])  # the member's side
    await poolstore.set_membership(session, "gpu", backend="gpu-2", member=True)  # the pool's
    await store.add_backend(session, _backend("gpu-3"), pools=["gpu"])  # joining at creation
    await store.add_model(session, spec.ModelSpec("llama3"), pools=())
    await poolstore.update_pool(
        session, spec.PoolSpec("gpu", "", ("gpu-1", "gpu-2", "gpu-3"), ("llama3",))
    )
    await store.update_backend(session, _backend("gpu-2"), pools=())  # leaving bumps it too
    state = await store.load(session)
    joined = {name: state.backends_joined[("gpu", name)] for name in ("gpu-1", "gpu-3")}
    assert joined == {"gpu-1": 2, "gpu-3": 4}
    assert ("gpu", "gpu-2") not in state.backends_joined
    assert state.models_joined[("gpu", "llama3:latest")] == 5  # type: ignore[index]
    assert (await poolstore.get_pool(session, "gpu")).meta.generation == 6


async def test_only_the_membership_module_writes_pool_membership_rows(
    session: AsyncSession,
) -> None:
    """Every path that joins or leaves a pool goes through `memberships.replace`: one writer,
    so the dating and bumping rules cannot drift apart between two copies."""
    writers: set[str] = set()
    sync_engine = session.bind.sync_engine  # type: ignore[union-attr]

    def spot(*args: object) -> None:
        statement = str(args[2]).lstrip().upper()
        if statement.startswith(("INSERT", "DELETE", "UPDATE")) and (
            "POOL_BACKENDS" in statement or "POOL_MODELS" in statement
        ):
            writers.add(_innermost_runtimestate_module())

    event.listen(sync_engine, "before_cursor_execute", spot)
    try:
        await poolstore.create_pool(session, spec.PoolSpec("gpu"))
        await store.add_backend(session, _backend("gpu-1"), pools=["gpu"])
        await store.add_model(session, spec.ModelSpec("llama3"), pools=["gpu"])
        await store.update_backend(session, _backend("gpu-1"), pools=[spec.DEFAULT_POOL])
        await store.update_model(session, spec.ModelSpec("llama3"), pools=[spec.DEFAULT_POOL])
        await poolstore.update_pool(session, spec.PoolSpec("gpu", "", ("gpu-1",), ("llama3",)))
        await poolstore.set_membership(session, "gpu", model="llama3", member=False)
        await store.delete_backend(session, "gpu-1")
        await store.delete_model(session, "llama3")
        await poolstore.create_pool(session, spec.PoolSpec("spare"))
        await store.add_backend(session, _backend("gpu-2"), pools=["spare"])
        await poolstore.delete_pool(session, "spare")
    finally:
        event.remove(sync_engine, "before_cursor_execute", spot)
    assert writers == {"runtimestate.desired.memberships"}


def _innermost_runtimestate_module() -> str:
    """The module of ours nearest the statement on the stack. SQLAlchemy runs the statement in
    a greenlet whose stack starts afresh: the awaiting code is on its parent's stack."""
    here: greenlet.greenlet | None = greenlet.getcurrent()
    frame = inspect.currentframe()
    while here is not None:
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            if module.startswith("runtimestate."):
                return module
            frame = frame.f_back
        here = here.parent
        frame = here.gr_frame if here is not None else None
    return "<none of ours>"
