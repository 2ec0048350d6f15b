"""Warm models on emulated Ollama nodes (issue 16): backend cycles on a real database preload
declared-warm models, exactly once per warm-up, never during a pull nor past the VRAM budget,
and unload what llmctl preloaded once it stops being warm. The official `ollama` client plays
"something else". The tests declare warmth and budgets with the store functions the CLI's
`model update --warm` and `backend update --vram` call."""

from __future__ import annotations

import dataclasses
import datetime as dt

import ollama as ollama_client
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import queue
from emulators import faults, ollama
from runtimestate import clock, resolver
from runtimestate.desired import names, spec, store
from runtimestate.reconcile import preloads, steps
from tests.integration.cycle_fixtures import Fleet, fleet_file

pytestmark = pytest.mark.timeout(120)
QWEN = "qwen2:0.5b"


async def declare_warm(fleet: Fleet, model: str, warm: bool = True) -> None:
    """What `model update M --warm` (or `--no-warm`) writes."""

    async def write(session: AsyncSession) -> None:
        old = await store.get_model(session, model)
        await store.update_model(session, dataclasses.replace(old.spec, warm=warm))

    await fleet.tx(write)


async def declare_vram(fleet: Fleet, backend: str, size: int) -> None:
    """What `backend update B --vram SIZE` writes."""

    async def write(session: AsyncSession) -> None:
        old = await store.get_backend(session, backend)
        await store.update_backend(session, dataclasses.replace(old.spec, vram_bytes=size))

    await fleet.tx(write)


def loaded(emu: ollama.Emulator, node: int) -> set[str]:
    return {m.spec.name for m in emu.nodes[node].running()}


async def test_a_warm_model_is_loaded_on_every_backend_placing_it_with_one_request_each(
    fleet: Fleet,
) -> None:
    async with ollama.running(nodes=2, installed=[QWEN]) as emu:
        backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(2)}
        await fleet.apply(fleet_file(backends, [QWEN]))
        await fleet.state.run_backend_cycle()
        assert loaded(emu, 0) == loaded(emu, 1) == set()  # declared, not warm: not loaded
        await declare_warm(fleet, QWEN)
        report = await fleet.state.run_backend_cycle()
        assert report.summary()["preloads"] == 2
        assert loaded(emu, 0) == loaded(emu, 1) == {QWEN}
        for _ in range(3):
            report = await fleet.state.run_backend_cycle()
            assert not report.plan.of(steps.Preload)
        assert [emu.nodes[i].preloads[QWEN] for i in range(2)] == [1, 1]
        warm = fleet.state.get().backends["gpu-0"].condition("WarmModels")
        assert warm is not None
        assert (warm.status, warm.message) == (True, f"{QWEN}: warm")
        (pulled,) = fleet.state.get().backends["gpu-0"].pulled_models
        assert pulled.size_vram > 0
        assert pulled.expires_at is not None
        assert pulled.expires_at.year > 2200  # no keepAlive declared: forever


async def test_a_warm_model_unloaded_by_something_else_is_loaded_again_within_one_cycle(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=[QWEN]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, [QWEN]))
        await declare_warm(fleet, QWEN)
        await fleet.state.run_backend_cycle()
        assert loaded(emu, 0) == {QWEN}
        await ollama_client.AsyncClient(emu.url).generate(QWEN, prompt="", keep_alive=0)
        assert loaded(emu, 0) == set()
        await fleet.state.run_backend_cycle()
        assert loaded(emu, 0) == {QWEN}
        assert emu.nodes[0].preloads[QWEN] == 2  # one per warm-up


async def test_a_warm_model_is_never_preloaded_while_a_download_of_it_is_active(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=[QWEN]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, [QWEN]))
        await declare_warm(fleet, QWEN)
        key = names.key(QWEN, spec.BackendType.OLLAMA)
        now = dt.datetime.now(dt.UTC)
        await fleet.tx(
            lambda s: queue.enqueue(s, "gpu-0", QWEN, model_key=key, declaration="d", now=now)
        )
        report = await fleet.state.run_backend_cycle()
        assert not report.plan.of(steps.Preload)
        assert emu.nodes[0].preloads[QWEN] == 0
        warm = fleet.state.get().backends["gpu-0"].condition("WarmModels")
        assert warm is not None
        assert (warm.status, warm.reason) == (False, "cold_pulling")
        assert warm.message == f"{QWEN}: left cold: a download of it is active"


async def test_a_warm_model_past_the_vram_budget_stays_cold_and_the_cycle_says_why(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=[QWEN, "llama3.2:1b"]) as emu:
        await ollama_client.AsyncClient(emu.url).generate("llama3.2:1b", prompt="", keep_alive=-1)
        held = emu.nodes[0].running()[0].spec.size
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, [QWEN]))
        await declare_warm(fleet, QWEN)
        await declare_vram(fleet, "gpu-0", held + 1000)
        report = await fleet.state.run_backend_cycle()
        assert not report.plan.of(steps.Preload)
        assert emu.nodes[0].preloads[QWEN] == 0
        warm = fleet.state.get().backends["gpu-0"].condition("WarmModels")
        assert warm is not None
        assert (warm.status, warm.reason) == (False, "cold_budget")
        assert warm.message.startswith(f"{QWEN}: left cold: needs ")
        assert "VRAM free" in warm.message
        await declare_vram(fleet, "gpu-0", 100 * 10**9)  # a larger declaration: room appears
        await fleet.state.run_backend_cycle()
        assert loaded(emu, 0) == {QWEN, "llama3.2:1b"}


async def test_a_model_llmctl_preloaded_is_unloaded_once_it_stops_being_warm(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=[QWEN, "llama3.2:1b"]) as emu:
        client = ollama_client.AsyncClient(emu.url)
        await client.generate("llama3.2:1b", prompt="", keep_alive=-1)  # someone else's
        models = [QWEN, "llama3.2:1b"]
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, models))
        await declare_warm(fleet, QWEN)
        await fleet.state.run_backend_cycle()
        assert loaded(emu, 0) == {QWEN, "llama3.2:1b"}
        assert await fleet.tx(preloads.load) == {"gpu-0": frozenset({QWEN})}
        await declare_warm(fleet, QWEN, warm=False)
        report = await fleet.state.run_backend_cycle()
        assert [a.model for a in report.plan.of(steps.Unload)] == [QWEN]
        assert loaded(emu, 0) == {"llama3.2:1b"}  # only what llmctl preloaded
        assert emu.nodes[0].unloads[QWEN] == 1
        assert await fleet.tx(preloads.load) == {}
        report = await fleet.state.run_backend_cycle()
        assert not report.plan.mutating


async def test_a_preload_that_timed_out_is_not_sent_again_until_its_grace_has_passed(
    migrated_url: str,
) -> None:
    fake = clock.FakeClock()
    fleet = Fleet(migrated_url, clock=fake)
    try:
        async with ollama.running(installed=[QWEN]) as emu:
            # The node does not answer before the adapter gives up (QUICK: 1.5 s).
            slow = faults.Fault(faults.FaultKind.LATENCY, latency=2.5, times=1)
            emu.set_fault(slow, "/api/generate", node=0)
            await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, [QWEN]))
            await declare_warm(fleet, QWEN)
            first = await fleet.state.run_backend_cycle()
            assert [o.ok for o in first.outcomes if isinstance(o.action, steps.Preload)] == [False]
            second = await fleet.state.run_backend_cycle()
            assert not second.plan.of(steps.Preload)
            cold = [d.reason.code for d in second.plan.of(steps.ReportDrift)]
            assert cold == [steps.ReasonCode.COLD_PENDING]
            assert emu.nodes[0].requests["POST /api/generate"] == 1
            fake.advance(preloads.DEFAULT_GRACE.total_seconds())
            await fleet.state.run_backend_cycle()  # a new warm-up
            assert loaded(emu, 0) == {QWEN}
            await fleet.state.run_backend_cycle()
            assert emu.nodes[0].requests["POST /api/generate"] == 2
    finally:
        await fleet.close()


async def test_warm_first_routes_to_the_backend_where_the_cycle_keeps_the_model_warm(
    fleet: Fleet,
) -> None:
    async with ollama.running(nodes=2, installed=[QWEN]) as emu:
        backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(2)}
        await fleet.apply(fleet_file(backends, [QWEN]))
        await declare_warm(fleet, QWEN)
        await declare_vram(fleet, "gpu-0", 1000)  # too small: gpu-0 leaves it cold
        await fleet.state.run_backend_cycle()
        assert (loaded(emu, 0), loaded(emu, 1)) == (set(), {QWEN})
        await fleet.state.run_backend_cycle()  # the snapshot shows what it observed
        r = resolver.Resolver.from_snapshot(fleet.state.get())
        request = resolver.Request(models=(QWEN,), policy=resolver.Policy.WARM_FIRST)
        assert {r.resolve(request).provider.backend for _ in range(8)} == {"gpu-1"}
