"""run_backend_cycle against emulated Ollama and vLLM nodes and a real database."""

from __future__ import annotations

import time

import ollama as ollama_client
import pytest

from emulators import faults, ollama, vllm
from runtimestate import clock, snapshot
from runtimestate.desired import spec, store
from runtimestate.reconcile import status, steps
from tests.integration.cycle_fixtures import PATIENT, Fleet, fleet_file, installed

pytestmark = pytest.mark.timeout(120)
P = snapshot.Phase


async def test_a_fleet_converges_pulling_what_is_missing_and_touching_nothing_else(
    fleet: Fleet,
) -> None:
    async with ollama.running(nodes=2, installed=["nomic-embed-text"]) as emu:
        backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(2)}
        await fleet.apply(fleet_file(backends, ["qwen2:0.5b", "llama3.2:1b"]))
        report = await fleet.converge()
        assert not report.plan.mutating
        for node in range(2):
            assert installed(emu, node) == {"nomic-embed-text:latest", "qwen2:0.5b", "llama3.2:1b"}
        states = fleet.state.get().backends
        assert {s.phase for s in states.values()} == {P.READY}
        ready = states["gpu-0"].condition("ModelsReady")
        assert ready is not None
        assert ready.status


async def test_prune_all_removes_undeclared_models_but_a_loaded_one_only_after_it_unloads(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=["qwen2:0.5b", "nomic-embed-text", "llama3.2:1b"]) as emu:
        client = ollama_client.AsyncClient(emu.url)
        await client.generate("llama3.2:1b", prompt="", keep_alive=-1)
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "all")}, ["qwen2:0.5b"]))
        await fleet.converge()
        assert installed(emu, 0) == {"qwen2:0.5b", "llama3.2:1b"}
        kept = fleet.state.get().backends["gpu-0"].condition("ServedNotDeclared")
        assert kept is not None
        assert "llama3.2:1b (loaded)" in kept.message
        await client.generate("llama3.2:1b", prompt="", keep_alive=0)
        await fleet.converge()
        assert installed(emu, 0) == {"qwen2:0.5b"}


async def test_managed_prune_removes_only_what_llmctl_pulled(fleet: Fleet) -> None:
    async with ollama.running(installed=["nomic-embed-text"]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"]))
        await fleet.converge()
        assert installed(emu, 0) == {"nomic-embed-text:latest", "qwen2:0.5b"}
        await fleet.apply(
            fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["llama3.2:1b"]), prune=True
        )
        await fleet.converge()
        assert installed(emu, 0) == {"nomic-embed-text:latest", "llama3.2:1b"}


async def test_declaring_llama3_on_a_node_with_llama3_latest_does_nothing_cycle_after_cycle(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=["llama3:latest"]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "all")}, ["llama3"]))
        for _ in range(5):
            report = await fleet.state.run_backend_cycle()
            assert report.plan.mutating == ()
            await fleet.state.run_download_cycle()
        assert emu.nodes[0].requests["POST /api/pull"] == 0
        assert emu.nodes[0].requests["DELETE /api/delete"] == 0


async def test_a_hung_and_a_garbage_node_degrade_then_become_unreachable_and_recover(
    migrated_url: str,
) -> None:
    policy = PATIENT.cycle.probing  # production's: a grace of minutes, passed on a fake clock
    fake = clock.FakeClock()
    fleet = Fleet(migrated_url, PATIENT, clock=fake)
    try:
        async with ollama.running(nodes=3) as emu:
            backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(3)}
            await fleet.apply(fleet_file(backends, ["qwen2:0.5b"]))
            await fleet.state.run_backend_cycle()
            emu.set_fault(faults.Fault(faults.FaultKind.HANG), node=1)
            emu.set_fault(faults.Fault(faults.FaultKind.MALFORMED), node=2)
            started = time.monotonic()
            report = await fleet.state.run_backend_cycle()
            assert time.monotonic() - started < 3.0 + 1.0
            states = report.snapshot.backends
            assert (states["gpu-1"].phase, states["gpu-2"].phase) == (P.DEGRADED, P.DEGRADED)
            reachable = states["gpu-1"].condition("Reachable")
            assert reachable is not None
            assert (reachable.status, reachable.reason) == (False, "timeout")
            garbage = states["gpu-2"].condition("Reachable")
            assert garbage is not None
            assert garbage.reason == "protocol"
            await fleet.converge(cycles=5)  # backing off: the failing nodes are not asked again
            assert "qwen2:0.5b" in installed(emu, 0)
            fake.advance(policy.grace.total_seconds() - 1)
            states = (await fleet.state.run_backend_cycle()).snapshot.backends
            assert (states["gpu-1"].phase, states["gpu-2"].phase) == (P.DEGRADED, P.DEGRADED)
            fake.advance(2)
            states = (await fleet.state.run_backend_cycle()).snapshot.backends
            assert (states["gpu-1"].phase, states["gpu-2"].phase) == (P.UNREACHABLE, P.UNREACHABLE)
            assert states["gpu-0"].phase is P.READY
            emu.clear_faults()
            fake.advance(policy.max_delay.total_seconds())  # the longest backoff
            await fleet.converge()
            states = fleet.state.get().backends
            assert {s.phase for s in states.values()} == {P.READY}
            assert all("qwen2:0.5b" in installed(emu, node) for node in range(3))
    finally:
        await fleet.close()


async def test_vllm_drift_is_reported_as_conditions_and_nothing_is_sent(fleet: Fleet) -> None:
    async with vllm.running(served_model_names=["served-only"]) as emu:
        await fleet.apply(fleet_file({"vllm-0": ("vllm", emu.url, "all")}, ["declared-only"]))
        report = await fleet.converge(cycles=2)
        assert report.plan.mutating == ()
        drift = {(a.kind, a.model) for a in report.plan.of(steps.ReportDrift)}
        assert drift == {
            (steps.DriftKind.DECLARED_NOT_SERVED, "declared-only"),
            (steps.DriftKind.SERVED_NOT_DECLARED, "served-only"),
        }
        state = fleet.state.get().backends["vllm-0"]
        missing = state.condition("DeclaredNotServed")
        extra = state.condition("ServedNotDeclared")
        assert missing is not None
        assert "declared-only" in missing.message
        assert extra is not None
        assert "served-only" in extra.message
        methods = {key.split()[0] for key in emu.nodes[0].requests}
        assert methods == {"GET"}


async def _persisted(fleet: Fleet, name: str) -> snapshot.LLMState:
    states: dict[str, snapshot.LLMState] = await fleet.tx(status.load_states)
    return states[name]


def _served(state: snapshot.LLMState) -> dict[str, snapshot.PulledModel]:
    return {m.name: m for m in state.pulled_models}


async def test_changes_after_a_steady_period_are_noticed_written_and_shown(fleet: Fleet) -> None:
    async with ollama.running(installed=["qwen2:0.5b"]) as emu:
        await fleet.apply(fleet_file({"gpu-0": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"]))
        states = [(await fleet.state.run_backend_cycle()).snapshot.backends["gpu-0"]]
        for _ in range(3):
            states.append((await fleet.state.run_backend_cycle()).snapshot.backends["gpu-0"])
        # Steady: the per-model part of the state is reused, only last_ok_at moves.
        assert all(s.pulled_models is states[0].pulled_models for s in states)
        assert states[-1].last_ok_at != states[0].last_ok_at
        assert (await _persisted(fleet, "gpu-0")).last_ok_at == states[-1].last_ok_at

        emu.nodes[0].install_names(["nomic-embed-text"])
        await fleet.state.run_backend_cycle()
        shown = fleet.state.get().backends["gpu-0"]
        assert set(_served(shown)) == {"qwen2:0.5b", "nomic-embed-text:latest"}
        assert _served(shown)["nomic-embed-text:latest"].can_embed
        assert set(_served(await _persisted(fleet, "gpu-0"))) == set(_served(shown))
        drift = shown.condition("ServedNotDeclared")
        assert drift is not None
        assert "nomic-embed-text:latest" in drift.message

        await fleet.state.run_backend_cycle()  # steady again: the node's replies are unchanged
        declared = spec.ModelSpec("qwen2:0.5b", context_length=1234)
        await fleet.tx(lambda s: store.update_model(s, declared))
        await fleet.state.run_backend_cycle()
        assert _served(fleet.state.get().backends["gpu-0"])["qwen2:0.5b"].context_length == 1234
        assert _served(await _persisted(fleet, "gpu-0"))["qwen2:0.5b"].context_length == 1234

        client = ollama_client.AsyncClient(emu.url)
        await client.generate("qwen2:0.5b", prompt="", keep_alive="1h")
        await fleet.state.run_backend_cycle()
        assert _served(fleet.state.get().backends["gpu-0"])["qwen2:0.5b"].loaded
        assert _served(await _persisted(fleet, "gpu-0"))["qwen2:0.5b"].loaded
