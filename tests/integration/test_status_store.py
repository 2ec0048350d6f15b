"""The status store on Postgres and SQLite: states written only on change, managed records."""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import snapshot
from runtimestate.desired import schema
from runtimestate.reconcile import status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _state(name: str, phase: snapshot.Phase = snapshot.Phase.READY) -> snapshot.LLMState:
    return snapshot.LLMState(
        id=1, name=name, type="ollama", base_url=f"http://{name}:11434", models=("llama3",),
        pulled_models=(snapshot.PulledModel("llama3:latest", "llama3:latest", loaded=True),),
        phase=phase, observed_generation=2, last_ok_at=T0,
    )  # fmt: skip


async def test_states_are_written_only_when_they_change(session: AsyncSession) -> None:
    first = {"a": _state("a"), "b": _state("b")}
    assert sorted(await status.write_states(session, first, {}, T0)) == ["a", "b"]
    assert await status.load_states(session) == first
    second = {"a": _state("a"), "b": _state("b", snapshot.Phase.DEGRADED)}
    assert await status.write_states(session, second, first, T0) == ["b"]
    assert (await status.load_states(session))["b"].phase is snapshot.Phase.DEGRADED


async def test_the_state_of_a_deleted_backend_is_dropped(session: AsyncSession) -> None:
    both = {"a": _state("a"), "b": _state("b")}
    await status.write_states(session, both, {}, T0)
    await status.write_states(session, {"a": both["a"]}, both, T0)
    assert list(await status.load_states(session)) == ["a"]


async def test_pulls_are_recorded_once_and_forgotten_on_removal(session: AsyncSession) -> None:
    await status.record_pulled(session, "gpu-1", "llama3", "llama3:latest", "J1", T0)
    await status.record_pulled(session, "gpu-1", "llama3", "llama3:latest", "J2", T0)
    await status.record_pulled(session, "gpu-2", "qwen2", "qwen2:latest", None, T0)
    assert await status.managed(session) == {("gpu-1", "llama3:latest"), ("gpu-2", "qwen2:latest")}
    await status.forget(session, "gpu-1", ["llama3:latest"])
    await status.forget_backends(session, ["gpu-2"])
    assert await status.managed(session) == frozenset()


async def test_a_state_survives_the_database_unchanged(session: AsyncSession) -> None:
    state = dataclasses.replace(
        _state("a"), conditions=(snapshot.Condition("Reachable", True, "ok"),), version="0.30.0"
    )
    await status.write_states(session, {"a": state}, {}, T0)
    await session.commit()
    assert (await status.load_states(session))["a"] == state


async def test_a_moved_last_ok_at_alone_is_stored_without_rewriting_the_document(
    session: AsyncSession,
) -> None:
    first = {"a": _state("a"), "b": _state("b")}
    await status.write_states(session, first, {}, T0)
    later = T0 + dt.timedelta(seconds=30)
    second = {name: dataclasses.replace(s, last_ok_at=later) for name, s in first.items()}
    assert await status.write_states(session, second, first, later) == []
    assert await status.load_states(session) == second
    rows = (await session.scalars(sa.select(schema.BackendStatusRow))).all()
    assert {row.updated_at for row in rows} == {T0}  # no document was written again
    assert all("last_ok_at" not in row.document for row in rows)


async def test_a_real_change_after_a_steady_period_is_written(session: AsyncSession) -> None:
    steady = {"a": _state("a")}
    await status.write_states(session, steady, {}, T0)
    previous = steady
    for cycle in range(1, 4):
        moved = {"a": dataclasses.replace(steady["a"], last_ok_at=T0 + dt.timedelta(cycle))}
        assert await status.write_states(session, moved, previous, T0) == []
        previous = moved
    fewer = {"a": dataclasses.replace(previous["a"], pulled_models=())}
    assert await status.write_states(session, fewer, previous, T0) == ["a"]
    assert await status.load_states(session) == fewer


async def test_a_document_from_before_the_column_keeps_its_last_ok_at(
    session: AsyncSession,
) -> None:
    await status.write_states(session, {"a": _state("a")}, {}, T0)
    old_style = snapshot.state_to_dict(_state("a"))
    await session.execute(
        sa.update(schema.BackendStatusRow).values(document=old_style, last_ok_at=None)
    )
    assert (await status.load_states(session))["a"].last_ok_at == T0
