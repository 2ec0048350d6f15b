"""`Resolver.from_database` in another process sees what the controller just recorded.

A child process follows the database (polled) or NATS; the test writes a backend state with
``status.write_states`` (and publishes ``snapshot.to_wire`` of it, as the backend cycle does)
and measures how long the child takes to resolve the newly pulled model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import pathlib
import sys
import time

import nats
import pytest

from runtimestate import database, resolver, snapshot
from runtimestate.reconcile import status
from tests.unit.test_resolver import backend, model

ROOT = pathlib.Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BEFORE = backend("gpu-1", model("llama3:latest"))
AFTER = dataclasses.replace(BEFORE, pulled_models=(*BEFORE.pulled_models, model("qwen2:7b", 32768)))
CHILD = """
import asyncio, sys
from runtimestate import resolver

async def main(url, nats_url, prefix):
    r = await resolver.Resolver.from_database(url, nats_url or None, prefix)
    request = resolver.Request(models=("qwen2:7b",))
    print("ready", flush=True)
    try:
        while True:
            try:
                print("seen", r.resolve(request).provider.backend, flush=True)
                return
            except resolver.ResolveError:
                await asyncio.sleep(0.005)
    finally:
        await r.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


async def _write(
    url: str, states: dict[str, snapshot.LLMState], previous: dict[str, snapshot.LLMState]
) -> None:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await status.write_states(session, states, previous, T0)
    finally:
        await engine.dispose()


async def _line(stream: asyncio.StreamReader, timeout_s: float) -> str:
    return (await asyncio.wait_for(stream.readline(), timeout_s)).decode().strip()


async def _seen_after_change(url: str, nats_url: str, prefix: str, publish: bool) -> float:
    await _write(url, {"gpu-1": BEFORE}, {})
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, nats_url, prefix,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        assert await _line(child.stdout, 30) == "ready"
        started = time.monotonic()
        await _write(url, {"gpu-1": AFTER}, {"gpu-1": BEFORE})
        if publish:
            nc = await nats.connect(nats_url)
            await nc.publish(f"{prefix}.v1.state.gpu-1", snapshot.to_wire(AFTER))
            await nc.flush()
            await nc.close()
        assert await _line(child.stdout, 10) == "seen gpu-1"
        return time.monotonic() - started
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def test_another_process_sees_a_pulled_model_from_the_database_within_a_second(
    migrated_url: str,
) -> None:
    assert await _seen_after_change(migrated_url, "", "llmctl", publish=False) < 1.0


async def test_another_process_sees_a_pulled_model_from_nats_at_once(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> None:
    # With NATS the database is re-read only every 30 s: seeing it sooner means NATS did it.
    assert await _seen_after_change(migrated_url, nats_url, nats_prefix, publish=True) < 0.5


async def test_a_state_published_on_nats_is_used_before_the_database_has_it(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> None:
    await _write(migrated_url, {"gpu-1": BEFORE}, {})
    r = await resolver.Resolver.from_database(migrated_url, nats_url, nats_prefix)
    try:
        nc = await nats.connect(nats_url)
        await nc.publish(f"{nats_prefix}.v1.state.gpu-1", snapshot.to_wire(AFTER))  # DB not yet
        await nc.flush()
        await nc.close()
        request = resolver.Request(models=("qwen2:7b",))
        for _ in range(200):
            try:
                r.resolve(request)
                break
            except resolver.ResolveError:
                await asyncio.sleep(0.01)
        assert r.resolve(request).provider.backend == "gpu-1"
    finally:
        await r.aclose()


async def test_from_database_reports_an_unusable_database() -> None:
    with pytest.raises(database.DatabaseUrlError):
        await resolver.Resolver.from_database("mysql://nowhere/db")
