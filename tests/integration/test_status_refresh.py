"""A backend's status is brought up to date when a download on it ends, without a cycle:
against real emulated Ollama nodes, a real database (SQLite and Postgres) and real NATS."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest

from dwqueue import queue
from emulators import faults, ollama
from runtimestate import clock, snapshot
from runtimestate.backends import base
from runtimestate.reconcile import status
from tests.integration.cycle_fixtures import ARRIVES_S, QUICK, Fleet, Heard, published_fleet

pytestmark = pytest.mark.timeout(120)
FLEET = """
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-0}}
spec: {{type: ollama, url: "{url0}"}}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-1}}
spec: {{type: ollama, url: "{url1}"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "qwen2:0.5b"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "{wanted}"}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: edge}}
spec: {{backends: [gpu-0], models: ["qwen2:0.5b", "{wanted}"]}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: base}}
spec: {{backends: [gpu-1], models: ["qwen2:0.5b"]}}
"""


@pytest.fixture
async def world(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> AsyncIterator[tuple[Fleet, Heard]]:
    async with published_fleet(migrated_url, nats_url, nats_prefix) as found:
        yield found


async def _heard_state(heard: Heard, backend: str, after: int) -> dict[str, object]:
    """The first state message of ``backend`` beyond the first ``after`` of them."""
    deadline = time.monotonic() + ARRIVES_S
    while True:
        mine = [d for name, d in heard.states() if name == backend]
        if len(mine) > after:
            return mine[after]
        assert time.monotonic() < deadline, f"no new state of {backend}: {heard.messages}"
        await asyncio.sleep(0.02)


async def _stored(fleet: Fleet, backend: str) -> snapshot.LLMState:
    states = await fleet.tx(status.load_states)
    return states[backend]  # type: ignore[no-any-return]


def _summary(state: snapshot.LLMState) -> tuple[object, ...]:
    ready = state.condition("ModelsReady")
    assert ready is not None
    return (
        state.phase.value,
        sorted(m.name for m in state.pulled_models),
        [d.model for d in state.downloads_pending],
        [d.model for d in (*state.downloads_failed, *state.downloads_held)],
        ready.status,
    )


@pytest.mark.parametrize(
    ("wanted", "served", "failed", "ready"),
    [
        ("llama3.2:1b", ["llama3.2:1b", "qwen2:0.5b"], [], True),
        ("no-such-model", ["qwen2:0.5b"], ["no-such-model"], False),
    ],
    ids=["succeeded", "failed"],
)
async def test_a_download_that_ends_updates_its_backends_status_row_and_event_at_once(
    world: tuple[Fleet, Heard], wanted: str, served: list[str], failed: list[str], ready: bool
) -> None:
    fleet, heard = world
    async with ollama.running(nodes=2, installed=["qwen2:0.5b"]) as emu:
        await fleet.apply(FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1), wanted=wanted))
        await fleet.state.run_backend_cycle()
        await heard.through_cycle(1)
        before = await _stored(fleet, "gpu-0")
        assert _summary(before) == ("Ready", ["qwen2:0.5b"], [wanted], [], False)
        published = len([n for n, _ in heard.states() if n == "gpu-0"])
        probes = [emu.nodes[i].requests["GET /api/tags"] for i in range(2)]

        await fleet.state.run_download_cycle()
        await fleet.state.settled()

        after = await _stored(fleet, "gpu-0")
        assert _summary(after) == ("Ready", served, [], failed, ready)
        event = snapshot.state_from_dict(await _heard_state(heard, "gpu-0", published))
        assert _summary(event) == _summary(after)
        assert _summary(fleet.state.get().backends["gpu-0"]) == _summary(after)
        assert [emu.nodes[i].requests["GET /api/tags"] for i in range(2)] == [
            probes[0] + 1,
            probes[1],
        ]
        assert [s for s, _ in heard.messages].count("cycles") == 1  # no other cycle ran


async def test_a_refresh_gives_way_to_a_status_observed_after_it_began(
    migrated_url: str,
) -> None:
    fake = clock.FakeClock()  # the refresh observes at the cycle's clock's time
    fleet = Fleet(migrated_url, clock=fake)
    try:
        async with ollama.running(installed=["qwen2:0.5b"]) as emu:
            await fleet.apply(
                FLEET.format(url0=emu.url, url1=emu.url, wanted="qwen2:0.5b").split("---")[0]
            )
            await fleet.state.run_backend_cycle()
            stored = await _stored(fleet, "gpu-0")
            later = fake.now() + dt.timedelta(minutes=1)  # another replica's observation
            newer = dataclasses.replace(stored, version="newer", last_ok_at=later)
            await fleet.tx(lambda s: status.write_states(s, {"gpu-0": newer}, {}, later))
            older = dataclasses.replace(stored, version="older")
            gave_way = await fleet.tx(
                lambda s: status.write_state_observed(
                    s, older, {"gpu-0": stored}, observed_at=later - dt.timedelta(seconds=1)
                )
            )
            assert gave_way is None
            assert (await _stored(fleet, "gpu-0")).version == "newer"
            assert await fleet.state.refresh_backend("gpu-0") is None
            assert (await _stored(fleet, "gpu-0")).version == "newer"
            written = await fleet.tx(
                lambda s: status.write_state_observed(s, older, {"gpu-0": newer}, observed_at=later)
            )
            assert written is True
            assert (await _stored(fleet, "gpu-0")).version == "older"
            fake.advance(61)  # now this process observes after the other replica did
            refreshed = await fleet.state.refresh_backend("gpu-0")
            assert refreshed is not None
            assert refreshed.last_ok_at == fake.now()
            assert (await _stored(fleet, "gpu-0")).last_ok_at == fake.now()
    finally:
        await fleet.close()


async def test_a_cancelled_download_leaves_its_backends_status_at_once(
    world: tuple[Fleet, Heard],
) -> None:
    fleet, heard = world
    async with ollama.running(nodes=2, installed=["qwen2:0.5b"], pull_rate=20_000_000) as emu:
        text = FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1), wanted="llama3.2:1b")
        await fleet.apply(text)
        await fleet.state.run_backend_cycle()
        await heard.through_cycle(1)
        published = len([n for n, _ in heard.states() if n == "gpu-0"])
        (job,) = await fleet.state.active_jobs()
        await fleet.state.run_download_cycle()
        deadline = time.monotonic() + ARRIVES_S
        while emu.nodes[0].requests["POST /api/pull"] == 0:
            assert time.monotonic() < deadline, "the pull never started"
            await asyncio.sleep(0.02)
        await fleet.tx(lambda s: queue.cancel(s, job.id))
        assert await fleet.state.downloads.check(job.id) is True
        await fleet.state.settled()

        after = await _stored(fleet, "gpu-0")
        assert _summary(after) == ("Ready", ["qwen2:0.5b"], [], ["llama3.2:1b"], False)  # held
        event = snapshot.state_from_dict(await _heard_state(heard, "gpu-0", published))
        assert _summary(event) == _summary(after)
        assert [s for s, _ in heard.messages].count("cycles") == 1


async def test_a_download_ending_during_a_cycle_is_shown_after_the_cycles_older_status(
    migrated_url: str,
) -> None:
    slow = dataclasses.replace(QUICK, timeouts=base.Timeouts(connect=1, read=5, stall=5, total=5))
    fleet = Fleet(migrated_url, slow)
    try:
        async with ollama.running(nodes=2, installed=["qwen2:0.5b"]) as emu:
            text = FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1), wanted="llama3.2:1b")
            await fleet.apply(text)
            await fleet.state.run_backend_cycle()  # queues the pull
            emu.set_fault(faults.Fault(faults.FaultKind.LATENCY, latency=3.0), node=1)
            seen = emu.nodes[0].requests["GET /api/tags"]
            running = asyncio.create_task(fleet.state.run_backend_cycle())
            deadline = time.monotonic() + ARRIVES_S
            while emu.nodes[0].requests["GET /api/tags"] == seen:  # gpu-0 seen without it
                assert time.monotonic() < deadline, "the cycle never observed gpu-0"
                await asyncio.sleep(0.01)
            await fleet.state.run_download_cycle()
            await fleet.state.downloads.drain()
            assert not running.done()  # the pull ended while the cycle waited for gpu-1
            report = await running
            stale = report.snapshot.backends["gpu-0"]
            assert [m.name for m in stale.pulled_models] == ["qwen2:0.5b"]
            await fleet.state.settled()
            after = await _stored(fleet, "gpu-0")
            assert _summary(after) == ("Ready", ["llama3.2:1b", "qwen2:0.5b"], [], [], True)
            assert after.last_ok_at is not None
            assert stale.last_ok_at is not None
            assert after.last_ok_at > stale.last_ok_at
    finally:
        await fleet.close()
