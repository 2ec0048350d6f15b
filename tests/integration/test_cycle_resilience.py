"""The backend cycle when things go wrong: a deadline that leaves backends unprobed, a new
process taking over, a backend moved to another URL, a database gone mid-cycle, an incomplete
read, and two cycles asked for at once. Real databases, emulated Ollama nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

import migrations
from emulators import faults, ollama, ollama_node, vllm
from runtimestate import clock, snapshot, state
from runtimestate.backends import base
from runtimestate.reconcile import cycle, probing, status, steps
from tests import services
from tests.integration.cycle_fixtures import PATIENT, QUICK, Fleet, fleet_file, installed

pytestmark = pytest.mark.timeout(120)
P = snapshot.Phase
HANG = faults.Fault(faults.FaultKind.HANG)
GARBAGE = faults.Fault(faults.FaultKind.MALFORMED)


def _served(state: snapshot.LLMState) -> set[str]:
    return {m.name for m in state.pulled_models}


async def _persisted(world: Fleet) -> dict[str, snapshot.LLMState]:
    states: dict[str, snapshot.LLMState] = await world.tx(status.load_states)
    return states


async def test_backends_the_deadline_left_unprobed_keep_their_state_and_are_not_marked_failing(
    migrated_url: str,
) -> None:
    settings = dataclasses.replace(
        QUICK,
        timeouts=base.Timeouts(connect=1.0, read=10.0, stall=10.0, total=10.0),
        cycle=dataclasses.replace(QUICK.cycle, concurrency=1, deadline_s=1.0),
    )
    world = Fleet(migrated_url, settings)
    try:
        async with ollama.running(nodes=3, installed=["qwen2:0.5b"]) as emu:
            backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(3)}
            await world.apply(fleet_file(backends, ["qwen2:0.5b"]))
            first = (await world.state.run_backend_cycle()).snapshot.backends
            assert {s.phase for s in first.values()} == {P.READY}
            emu.set_fault(HANG, node=0)
            emu.set_fault(HANG, node=1)
            asked = [sum(emu.nodes[i].requests.values()) for i in range(3)]
            report = await world.state.run_backend_cycle()
            # One slot: gpu-0 took it and hung until the deadline; gpu-1 and gpu-2 never ran.
            assert [sum(emu.nodes[i].requests.values()) for i in range(3)][1:] == asked[1:]
            states = report.snapshot.backends
            reachable = states["gpu-0"].condition("Reachable")
            assert reachable is not None
            assert (states["gpu-0"].phase, reachable.reason) == (P.DEGRADED, "timeout")
            for name in ("gpu-1", "gpu-2"):
                assert states[name].phase is P.READY, states[name]
                assert states[name].error is None
                assert _served(states[name]) == _served(first[name])
            summary = report.summary()
            assert (summary["observed"], summary["unobserved_deadline"]) == (1, 2)
            persisted = await _persisted(world)
            assert persisted["gpu-2"].phase is P.READY
    finally:
        await world.close()


async def test_a_new_process_keeps_a_failing_backends_last_good_models_for_the_grace_period(
    migrated_url: str,
) -> None:
    fake = clock.FakeClock()  # shared by the processes: the grace period is production's
    grace = PATIENT.cycle.probing.grace.total_seconds()
    async with ollama.running(installed=["qwen2:0.5b", "nomic-embed-text"]) as emu:
        first = Fleet(migrated_url, PATIENT, clock=fake)
        try:
            await first.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"]))
            before = (await first.state.run_backend_cycle()).snapshot.backends["gpu-0"]
        finally:
            await first.close()
        assert before.phase is P.READY
        emu.set_fault(GARBAGE)
        fake.advance(grace - 1)
        second = Fleet(migrated_url, PATIENT, clock=fake)  # serve restarted, or the next cron
        try:  # `reconcile --once`
            report = await second.state.run_backend_cycle()
        finally:
            await second.close()
        state = report.snapshot.backends["gpu-0"]
        assert state.phase is P.DEGRADED, state
        assert _served(state) == {"qwen2:0.5b", "nomic-embed-text:latest"}
        assert state.last_ok_at == before.last_ok_at
        assert report.plan.mutating == ()  # a kept list is reported, never acted on
        persisted = (await _persisted(Fleet(migrated_url)))["gpu-0"]
        assert (persisted.phase, _served(persisted)) == (P.DEGRADED, _served(state))
        assert persisted.pulled_models == before.pulled_models

        fake.advance(2)  # the grace period, counted from the last success, is over
        third = Fleet(migrated_url, PATIENT, clock=fake)
        try:
            late = (await third.state.run_backend_cycle()).snapshot.backends["gpu-0"]
        finally:
            await third.close()
        assert (late.phase, late.pulled_models) == (P.UNREACHABLE, ())


async def test_a_backend_moved_to_another_url_is_probed_afresh_not_held_in_backoff(
    migrated_url: str,
) -> None:
    slow = probing.Policy(
        grace=dt.timedelta(minutes=5),
        base_delay=dt.timedelta(minutes=1),
        max_delay=dt.timedelta(minutes=2),
    )
    world = Fleet(migrated_url, dataclasses.replace(QUICK, cycle=cycle.Settings(probing=slow)))
    try:
        async with ollama.running(nodes=2, installed=["qwen2:0.5b"]) as emu:
            emu.nodes[1].install_names(["nomic-embed-text"])
            moved = {"gpu-0": ("ollama", emu.node_url(0), "managed")}
            await world.apply(fleet_file(moved, ["qwen2:0.5b"]))
            await world.state.run_backend_cycle()
            emu.set_fault(GARBAGE, node=0)
            failing = (await world.state.run_backend_cycle()).snapshot.backends["gpu-0"]
            assert failing.phase is P.DEGRADED  # and backing off for a minute
            moved = {"gpu-0": ("ollama", emu.node_url(1), "managed")}
            await world.apply(fleet_file(moved, ["qwen2:0.5b"]))
            report = await world.state.run_backend_cycle()
        state = report.snapshot.backends["gpu-0"]
        assert (state.phase, state.error) == (P.READY, None)
        assert _served(state) == {"qwen2:0.5b", "nomic-embed-text:latest"}  # node 1's list
        assert report.summary()["skipped_backoff"] == 0
    finally:
        await world.close()


async def test_a_backend_given_new_credentials_is_probed_afresh_not_held_in_backoff(
    fleet: Fleet,
) -> None:
    slow = probing.Policy(base_delay=dt.timedelta(minutes=1), max_delay=dt.timedelta(minutes=2))
    runtime = state.State(
        fleet.engine,
        settings=dataclasses.replace(QUICK, cycle=cycle.Settings(probing=slow)),
        environ={"OLD_KEY": "sk-wrong", "NEW_KEY": "sk-right"},
    )

    def provider(url: str, variable: str) -> str:
        return (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: cloud-0}\n"
            f'spec: {{type: openai, url: "{url}/v1", credentials: {{env: {variable}}}}}\n'
        )

    try:
        async with vllm.running(served_model_names=["chat-model"], api_key="sk-right") as emu:
            await fleet.apply(provider(emu.url, "OLD_KEY"))
            refused = (await runtime.run_backend_cycle()).snapshot.backends["cloud-0"]
            assert refused.phase is P.UNREACHABLE  # and backing off for a minute
            await fleet.apply(provider(emu.url, "NEW_KEY"))
            report = await runtime.run_backend_cycle()
    finally:
        await runtime.aclose()
    accepted = report.snapshot.backends["cloud-0"]
    assert (accepted.phase, accepted.error) == (P.READY, None)
    assert _served(accepted) == {"chat-model"}
    assert report.summary()["skipped_backoff"] == 0


async def _asked_again(node: ollama_node.OllamaNode, asked: int) -> None:
    """Wait (at most 10 s) until the node is asked for its models once more than ``asked``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if node.requests["GET /api/tags"] > asked:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the node was not asked for its models")


async def test_two_cycles_asked_for_at_once_run_one_after_the_other(fleet: Fleet) -> None:
    async with ollama.running(installed=["qwen2:0.5b"]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"]))
        await fleet.state.run_backend_cycle()
        emu.set_fault(faults.Fault(faults.FaultKind.LATENCY, latency=0.5), "/api/tags")
        node = emu.nodes[0]
        asked = node.requests["GET /api/tags"]
        started = time.monotonic()
        both = asyncio.gather(fleet.state.run_backend_cycle(), fleet.state.run_backend_cycle())
        await _asked_again(node, asked)
        await asyncio.sleep(0.3)  # a second cycle running alongside would have asked by now
        assert node.requests["GET /api/tags"] == asked + 1
        first, second = await both
        assert node.requests["GET /api/tags"] == asked + 2
        assert sorted((first.cycle, second.cycle)) == [2, 3]
        assert time.monotonic() - started >= 1.0


async def test_a_read_that_is_not_complete_neither_prunes_nor_cancels(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = cycle.BackendCycle._read

    async def incomplete(self: cycle.BackendCycle, session: AsyncSession) -> object:
        return dataclasses.replace(await read(self, session), complete=False)

    async with ollama.running(installed=["qwen2:0.5b", "nomic-embed-text"]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "all")}, ["qwen2:0.5b"]))
        orphan = await fleet.enqueue("gone-0", "llama3.2:1b")  # a backend deleted since
        monkeypatch.setattr(cycle.BackendCycle, "_read", incomplete)
        held = await fleet.state.run_backend_cycle()
        assert held.plan.of(steps.Prune) == ()
        assert held.plan.of(steps.CancelJob) == ()
        assert "nomic-embed-text:latest" in installed(emu, 0)
        assert (await fleet.job(orphan.id)).state.value == "queued"
        monkeypatch.undo()
        done = await fleet.state.run_backend_cycle()
        assert [a.model for a in done.plan.of(steps.Prune)] == ["nomic-embed-text:latest"]
        assert [a.job_id for a in done.plan.of(steps.CancelJob)] == [orphan.id]
        assert "nomic-embed-text:latest" not in installed(emu, 0)
        assert (await fleet.job(orphan.id)).state.value == "cancelled"


async def _run_while_the_database_stops(
    world: Fleet, emu: ollama.Emulator, server: services.PostgresServer
) -> cycle.Report:
    """A cycle whose read succeeds and whose every later database call fails: Postgres stops
    while the nodes are slow to list their models."""
    emu.set_fault(faults.Fault(faults.FaultKind.LATENCY, latency=1.5), "/api/tags")
    node = emu.nodes[0]
    asked = node.requests["GET /api/tags"]
    running = asyncio.create_task(world.state.run_backend_cycle())
    await _asked_again(node, asked)
    await asyncio.to_thread(server.stop)
    report = await running
    await asyncio.to_thread(server.start)
    emu.clear_faults()
    return report


async def _cycle_after_restart(world: Fleet) -> cycle.Report:
    """The first read after a restart may meet a pooled connection that died; the pool then
    reconnects (that read raising is the one failure a cycle raises on)."""
    for _ in range(5):
        try:
            return await world.state.run_backend_cycle()
        except sa.exc.OperationalError:
            await asyncio.sleep(0.2)
    return await world.state.run_backend_cycle()


SLOW_OK = dataclasses.replace(
    QUICK,
    timeouts=base.Timeouts(connect=1.0, read=5.0, stall=5.0, total=5.0),
    cycle=dataclasses.replace(QUICK.cycle, deadline_s=8.0),
)


async def test_a_database_outage_after_the_read_fails_the_actions_not_the_cycle(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    world = Fleet(url, SLOW_OK)
    try:
        with structlog.testing.capture_logs() as logged:
            async with ollama.running(nodes=2, installed=["qwen2:0.5b"]) as emu:
                backends = {
                    "gpu-0": ("ollama", emu.node_url(0), "managed"),
                    "gpu-1": ("ollama", emu.node_url(1), "all"),
                }
                await world.apply(fleet_file(backends, ["qwen2:0.5b"]))
                await world.state.run_backend_cycle()
                # Next cycle: two pulls (a new model) and a prune (an undeclared one on gpu-1).
                await world.apply(fleet_file(backends, ["qwen2:0.5b", "llama3.2:1b"]))
                emu.nodes[1].install_names(["nomic-embed-text"])
                report = await _run_while_the_database_stops(world, emu, fresh_postgres_server)
                kinds = sorted(type(o.action).__name__ for o in report.outcomes)
                assert kinds == ["Prune", "Pull", "Pull"]
                assert not any(o.ok for o in report.outcomes)
                assert report.summary()["failed_actions"] == 3
                assert report.status_written is False
                assert "nomic-embed-text:latest" in installed(emu, 1)  # not without the lock

                after = await _cycle_after_restart(world)
                assert after.summary()["failed_actions"] == 0
                assert after.status_written
                assert "nomic-embed-text:latest" not in installed(emu, 1)
                active = {(j.backend, j.model) for j in await world.state.active_jobs()}
                assert active == {("gpu-0", "llama3.2:1b"), ("gpu-1", "llama3.2:1b")}
    finally:
        await world.close()
    warned = [e for e in logged if e["log_level"] == "warning" and "failed" in e["event"]]
    assert {e["event"] for e in warned} >= {
        "backend cycle: queueing downloads and cancellations failed",
        "backend cycle: writing the status failed",
    }
    # The driver's first line, never the statement or its parameters.
    assert all("\n" not in e["error"] and "SQL" not in e["error"] for e in warned), warned
    assert not [e for e in logged if e["log_level"] == "error"]


async def test_a_status_write_lost_to_an_outage_is_written_by_the_next_cycle(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    world = Fleet(url, SLOW_OK)
    try:
        async with ollama.running(installed=["qwen2:0.5b"]) as emu:
            await world.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"]))
            await world.state.run_backend_cycle()
            emu.nodes[0].install_names(["nomic-embed-text"])  # only the status changes
            lost = await _run_while_the_database_stops(world, emu, fresh_postgres_server)
            assert lost.status_written is False
            assert lost.plan.mutating == ()
            shown = lost.snapshot.backends["gpu-0"]
            assert _served(shown) == {"qwen2:0.5b", "nomic-embed-text:latest"}
            # The next cycle computes the very same state: it still writes it.
            again = await _cycle_after_restart(world)
            assert again.status_written
            assert _served(again.snapshot.backends["gpu-0"]) == _served(shown)
        persisted = (await _persisted(world))["gpu-0"]
        assert _served(persisted) == {"qwen2:0.5b", "nomic-embed-text:latest"}
    finally:
        await world.close()
