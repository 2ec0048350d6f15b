"""The record of the models llmctl preloaded (`runtimestate.reconcile.preloads`), on SQLite and
Postgres, and the in-process marks of preloads whose result is unknown."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.reconcile import preloads

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def test_preloads_are_recorded_idempotently_and_forgotten_by_model_or_backend(
    session: AsyncSession,
) -> None:
    await preloads.record(session, "gpu-1", "qwen2:0.5b", "qwen2:0.5b", T0)
    await preloads.record(session, "gpu-1", "qwen2:0.5b", "qwen2:0.5b", T0)
    await preloads.record(session, "gpu-1", "llama3", "llama3:latest", T0)
    await preloads.record(session, "gpu-2", "llama3", "llama3:latest", T0)
    assert await preloads.load(session) == {
        "gpu-1": {"qwen2:0.5b", "llama3:latest"},
        "gpu-2": {"llama3:latest"},
    }
    await preloads.forget(session, "gpu-1", ["qwen2:0.5b"])
    await preloads.forget_backends(session, ["gpu-2"])
    assert await preloads.load(session) == {"gpu-1": {"llama3:latest"}}


def test_a_pending_preload_ends_when_the_model_shows_loaded_or_its_grace_passes() -> None:
    pending = preloads.Pending(grace=dt.timedelta(seconds=60))
    assert not pending.holds("gpu-1")
    pending.mark("gpu-1", "a:1", T0)
    pending.mark("gpu-1", "b:1", T0)
    assert pending.holds("gpu-1")
    assert pending.of("gpu-1", (), T0 + dt.timedelta(seconds=59)) == {"a:1", "b:1"}
    assert pending.of("gpu-1", {"a:1"}, T0 + dt.timedelta(seconds=59)) == {"b:1"}
    assert pending.of("gpu-1", (), T0 + dt.timedelta(seconds=60)) == frozenset()
    assert not pending.holds("gpu-1")
