"""LoRA adapters loaded where pools place them, by real backend cycles on emulated vLLM nodes
with runtime LoRA (issue 16), on SQLite and Postgres.

The adapters are declared and placed as a user does: files applied through the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import httpx
import openai
import pytest
import typer
from typer.testing import CliRunner

from controller import cli, declare
from controller import reconcile as reconcile_cli
from controller import resolve as resolve_cli
from emulators import vllm
from runtimestate import resolver
from runtimestate.reconcile import status, steps
from tests.integration.cycle_fixtures import Fleet, fleet_file

BASE = "base-7b"


@pytest.fixture
async def emu() -> AsyncIterator[vllm.Emulator]:
    async with vllm.running(nodes=10, served_model_names=[BASE], enable_lora=True) as running:
        yield running


async def _place(
    fleet: Fleet, emu: vllm.Emulator, pools: Mapping[str, tuple[str, ...]] | None = None
) -> None:
    """Five pools of two nodes each, all serving the base model; ``pools`` places adapters
    (pool -> names), applied as files: a pool's adapters are set exactly."""
    for p in range(5):
        backends = {f"gpu-{n}": ("vllm", emu.node_url(n), "managed") for n in (2 * p, 2 * p + 1)}
        placed = {a: BASE for a in (pools or {}).get(f"pool-{p}", ())}
        await fleet.apply(fleet_file(backends, [BASE], pool=f"pool-{p}", adapters=placed))


def _loaded(emu: vllm.Emulator, node: int) -> set[str]:
    return set(emu.nodes[node].loras)


def _loads(emu: vllm.Emulator) -> int:
    return sum(n.requests["POST /v1/load_lora_adapter"] for n in emu.nodes)


def _twenty() -> dict[str, tuple[str, ...]]:
    """Four adapters per pool, twenty in all."""
    return {f"pool-{p}": tuple(f"lora-{4 * p + i:02}" for i in range(4)) for p in range(5)}


def _wanted(pools: Mapping[str, tuple[str, ...]]) -> Mapping[int, set[str]]:
    """What each node should have loaded."""
    return {n: set(pools[f"pool-{n // 2}"]) for n in range(10)}


async def test_twenty_adapters_over_ten_nodes_are_loaded_within_two_cycles(
    fleet: Fleet, emu: vllm.Emulator
) -> None:
    await _place(fleet, emu, _twenty())
    wanted = _wanted(_twenty())
    await fleet.state.run_backend_cycle()
    await fleet.state.run_backend_cycle()
    assert {n: _loaded(emu, n) for n in range(10)} == wanted
    state = fleet.state.get().backends["gpu-3"]
    cards = {m.name: m.parent for m in state.pulled_models}
    assert cards == {BASE: None, **{a: BASE for a in wanted[3]}}
    ready = state.condition("AdaptersReady")
    assert ready is not None
    assert ready.status, ready


async def test_a_steady_fleet_makes_zero_load_calls(fleet: Fleet, emu: vllm.Emulator) -> None:
    await _place(fleet, emu, _twenty())
    await fleet.state.run_backend_cycle()
    await fleet.state.run_backend_cycle()
    before = _loads(emu)
    assert before == 40
    for _ in range(3):
        report = await fleet.state.run_backend_cycle()
        assert report.plan.of(steps.LoadAdapter) == ()
    assert _loads(emu) == before


async def test_a_restarted_node_has_its_adapters_back_within_one_cycle(
    fleet: Fleet, emu: vllm.Emulator
) -> None:
    await _place(fleet, emu, _twenty())
    wanted = _wanted(_twenty())
    await fleet.state.run_backend_cycle()
    await fleet.state.run_backend_cycle()
    async with httpx.AsyncClient() as client:
        reset = await client.post(f"{emu.node_url(4)}/_emulator/reset")
        assert reset.status_code == 200
    assert _loaded(emu, 4) == set()
    await fleet.state.run_backend_cycle()
    assert _loaded(emu, 4) == wanted[4]


async def test_managed_unloads_only_the_adapters_llmctl_loaded(
    fleet: Fleet, emu: vllm.Emulator
) -> None:
    await _place(fleet, emu, {"pool-0": ("mine",)})
    await fleet.state.run_backend_cycle()
    await fleet.state.run_backend_cycle()
    async with httpx.AsyncClient() as client:  # someone else loads one by hand
        body = {"lora_name": "theirs", "lora_path": "/adapters/theirs"}
        loaded = await client.post(f"{emu.node_url(0)}/v1/load_lora_adapter", json=body)
        assert loaded.status_code == 200
    assert _loaded(emu, 0) == {"mine", "theirs"}
    managed = await fleet.tx(status.managed_adapters)
    assert managed == {("gpu-0", "mine"), ("gpu-1", "mine")}
    await _place(fleet, emu)  # placed nowhere now
    await fleet.state.run_backend_cycle()
    await fleet.state.run_backend_cycle()
    assert _loaded(emu, 0) == {"theirs"}
    assert _loaded(emu, 1) == set()
    assert await fleet.tx(status.managed_adapters) == frozenset()
    kept = fleet.state.get().backends["gpu-0"]
    assert [m.name for m in kept.pulled_models if m.parent] == ["theirs"]
    extra = kept.condition("AdaptersNotDeclared")
    assert extra is not None
    assert (extra.reason, extra.message) == ("not_managed", "theirs (not_managed)")


async def test_a_server_without_runtime_lora_is_asked_once_and_says_why(fleet: Fleet) -> None:
    async with vllm.running(served_model_names=[BASE]) as off:
        backends = {"gpu-0": ("vllm", off.url, "managed")}
        await fleet.apply(fleet_file(backends, [BASE], adapters={"sql": BASE}))
        for _ in range(3):
            await fleet.state.run_backend_cycle()
        assert off.nodes[0].requests["POST /v1/load_lora_adapter"] == 1
        state = fleet.state.get().backends["gpu-0"]
        ready = state.condition("AdaptersReady")
        assert ready is not None
        assert not ready.status
        assert ready.reason == "load_refused"
        assert "runtime LoRA updating is off" in ready.message


async def test_the_openai_client_gets_a_completion_from_a_loaded_adapter(
    fleet: Fleet, emu: vllm.Emulator
) -> None:
    await _place(fleet, emu, {"pool-2": ("sql",)})
    await fleet.state.run_backend_cycle()  # loads it
    await fleet.state.run_backend_cycle()  # sees it listed
    found = resolver.Resolver.from_state(fleet.state).resolve(
        resolver.Request(models=("sql",), capability="chat")
    )
    assert found.provider.backend in {"gpu-4", "gpu-5"}
    assert {p.backend for p in found.providers()} == {"gpu-4", "gpu-5"}
    client = openai.AsyncOpenAI(base_url=f"{found.provider.base_url}/v1", api_key="none")
    reply = await client.chat.completions.create(
        model=found.provider.model, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "sql"
    assert reply.choices[0].message.content


def _resolve(url: str, *args: str) -> tuple[int, str]:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(cli.main_options)
    app.command("resolve")(resolve_cli.resolve_command)
    result = CliRunner().invoke(app, ["--database-url", url, "resolve", *args])
    return result.exit_code, result.stdout + result.stderr


async def test_resolve_says_an_adapter_placed_but_loaded_nowhere_is_not_loaded_yet(
    fleet: Fleet, migrated_url: str
) -> None:
    async with vllm.running(served_model_names=[BASE]) as off:  # runtime LoRA off
        backends = {"gpu-0": ("vllm", off.url, "managed")}
        await fleet.apply(fleet_file(backends, [BASE], adapters={"sql": BASE}))
        await fleet.state.run_backend_cycle()
        code, said = await asyncio.to_thread(_resolve, migrated_url, "sql")
        assert code == 1
        assert "no ready backend serves sql (declared on gpu-0, not loaded yet)" in said
        code, said = await asyncio.to_thread(_resolve, migrated_url, BASE)
        assert code == 0
        assert "gpu-0" in said


def _backend_get(url: str, name: str) -> tuple[int, str]:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(cli.main_options)
    app.add_typer(declare.backend_app, name="backend")
    result = CliRunner().invoke(app, ["--database-url", url, "backend", "get", name])
    return result.exit_code, result.stdout + result.stderr


async def test_backend_get_shows_adapters_with_their_base_loaded_or_not(
    fleet: Fleet, emu: vllm.Emulator, migrated_url: str
) -> None:
    await _place(fleet, emu, {"pool-0": ("sql", "chat")})
    await fleet.state.run_backend_cycle()
    emu.nodes[0].loras.pop("chat")  # unloaded behind llmctl's back: seen on the next cycle
    await fleet.state.run_backend_cycle()
    code, said = await asyncio.to_thread(_backend_get, migrated_url, "gpu-0")
    assert code == 0, said
    lines = [line.split() for line in said.splitlines()]
    assert ["ADAPTER", "BASEMODEL", "LOADED", "PLACED"] in lines
    assert ["sql", BASE, "True", "True"] in lines
    assert ["chat", BASE, "False", "True"] in lines  # the declared base, not loaded
    assert not any(line[:1] == ["sql"] and len(line) != 4 for line in lines)  # not a MODEL row


async def test_a_dry_run_lists_the_loads_with_their_reasons_and_loads_nothing(
    fleet: Fleet, emu: vllm.Emulator
) -> None:
    await _place(fleet, emu, {"pool-0": ("sql",)})
    report = await fleet.state.run_backend_cycle(dry_run=True)
    doc = reconcile_cli.report_doc(report, None)
    gpu0 = next(b for b in doc["backends"] if b["name"] == "gpu-0")
    assert gpu0["actions"] == [
        {"kind": "load-adapter", "model": "sql", "reason": "adapter_missing",
         "text": "load adapter sql on gpu-0: declared, not loaded", "done": None, "detail": None},
    ]  # fmt: skip
    assert report.summary()["adapter_loads"] == 2
    assert _loads(emu) == 0
