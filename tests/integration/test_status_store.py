"""The status store on Postgres and SQLite: states written only on change, managed records."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import snapshot, status

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
