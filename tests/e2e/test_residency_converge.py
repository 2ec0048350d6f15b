"""Issue 16's "done when" through the real CLI: adapters loaded on emulated vLLM, warm models on
emulated Ollama, and pulls admitted only where they fit, each declared with the commands a user
types, converged by ``reconcile --once`` publishing on real NATS, and shown by ``backend get``
and ``reconcile --dry-run``. The official ``openai`` client asks the backend ``resolve`` names."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import nats
import openai
import pytest

from controller import output
from dwqueue import flushing
from emulators import ollama, vllm
from tests.e2e.conftest import Cli, Result

pytestmark = [
    pytest.mark.timeout(120),
    # Slow (whole convergences): on real Postgres, as the "done when" asks.
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]
BASE = "base-7b"
QWEN = "qwen2:0.5b"
LLAMA = "llama3.2:1b"


async def _cycles(
    nats_url: str, prefix: str, action: Callable[[], Result]
) -> tuple[Result, list[dict[str, Any]]]:
    """Run the (blocking) CLI ``action`` while subscribed to the cycle summaries on NATS; what
    it returned and the summaries it published, in order."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(f"{prefix}.v1.cycles")
        await flushing.flush(nc, 10)  # the server has the SUB
        done = await asyncio.to_thread(action)
        assert done.code == 0, done.out + done.err
        heard = [json.loads((await sub.next_msg(timeout=5)).data)]
        while True:
            try:
                heard.append(json.loads((await sub.next_msg(timeout=0.2)).data))
            except nats.errors.TimeoutError:
                return done, heard
    finally:
        await nc.close()


def _heard(
    nats_url: str, prefix: str, action: Callable[[], Result]
) -> tuple[Result, list[dict[str, Any]]]:
    return asyncio.run(_cycles(nats_url, prefix, action))


def _ok(llmctl: Cli, *args: str) -> Result:
    done = llmctl(*args)
    assert done.code == 0, done.out + done.err
    return done


def _status(llmctl: Cli, backend: str) -> dict[str, Any]:
    status: dict[str, Any] = _ok(llmctl, "backend", "get", backend, "-o", "json").json()["status"]
    return status


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status["conditions"] if c["type"] == kind]
    assert len(found) == 1, status["conditions"]
    return found[0]


def test_an_adapter_added_to_a_pool_is_loaded_reloaded_resolved_served_and_unloaded(
    llmctl: Cli, nats_url: str, nats_prefix: str
) -> None:
    bus = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    with vllm.in_thread(served_model_names=[BASE], enable_lora=True) as emu:
        _ok(llmctl, "backend", "add", "gpu-0", "--type", "vllm", "--url", emu.url)
        _ok(llmctl, "model", "add", BASE)
        _ok(llmctl, "adapter", "add", "sql", "--base-model", BASE, "--source", "/adapters/sql")
        _ok(llmctl, "pool", "add-adapter", "default", "sql")
        run = lambda: llmctl(*bus, "reconcile", "--once", "--wait", "--timeout", "30")  # noqa: E731
        _, heard = _heard(nats_url, nats_prefix, run)
        assert heard[0]["adapter_loads"] == 1  # the first cycle loads it
        assert set(emu.nodes[0].loras) == {"sql"}
        adapters = _status(llmctl, "gpu-0")["adapters"]
        assert adapters == [{"name": "sql", "baseModel": BASE, "loaded": True, "placed": True}]
        shown = [line.split() for line in _ok(llmctl, "backend", "get", "gpu-0").out.splitlines()]
        assert ["sql", BASE, "True", "True"] in shown
        chosen = _ok(llmctl, "resolve", "sql", "-o", "json").json()["provider"]
        assert (chosen["backend"], chosen["model"]) == ("gpu-0", "sql"), chosen
        client = openai.OpenAI(base_url=f"{chosen['baseUrl']}/v1", api_key="none")
        reply = client.chat.completions.create(
            model="sql", messages=[{"role": "user", "content": "hi"}]
        )
        assert (reply.model, bool(reply.choices[0].message.content)) == ("sql", True)
        loads = emu.nodes[0].requests["POST /v1/load_lora_adapter"]
        _ok(llmctl, "reconcile", "--once")  # steady: no load call
        assert emu.nodes[0].requests["POST /v1/load_lora_adapter"] == loads == 1
        assert httpx.post(f"{emu.url}/_emulator/reset").status_code == 200  # a restart
        assert set(emu.nodes[0].loras) == set()
        _ok(llmctl, "reconcile", "--once")
        assert set(emu.nodes[0].loras) == {"sql"}  # back within one cycle
        _ok(llmctl, "adapter", "delete", "sql")
        _, heard = _heard(nats_url, nats_prefix, lambda: llmctl(*bus, "reconcile", "--once"))
        assert heard[0]["adapter_unloads"] == 1
        assert set(emu.nodes[0].loras) == set()  # within one cycle, prune managed


def test_a_warm_model_is_preloaded_once_on_each_backend_and_the_next_one_left_cold(
    llmctl: Cli, nats_url: str, nats_prefix: str
) -> None:
    bus = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    with ollama.in_thread(nodes=2, installed=[QWEN, LLAMA]) as emu:
        for n in range(2):
            _ok(llmctl, "backend", "add", f"gpu-{n}", "--type", "ollama", "--url", emu.node_url(n))
        _ok(llmctl, "model", "add", QWEN, "--warm", "--keep-alive", "-1")
        run = lambda: llmctl(*bus, "reconcile", "--once", "--wait", "--timeout", "30")  # noqa: E731
        _, heard = _heard(nats_url, nats_prefix, run)
        assert heard[0]["preloads"] == 2  # within one cycle
        assert [emu.nodes[n].preloads[QWEN] for n in range(2)] == [1, 1]
        status = _status(llmctl, "gpu-0")
        models = {m["name"]: m for m in status["models"]}
        model = models[QWEN]
        assert (model["loaded"], models[LLAMA]["sizeVram"]) == (True, None)  # LLAMA: cold
        assert model["sizeVram"] > 0
        assert dt.datetime.fromisoformat(model["expiresAt"]).year > 2200  # keep-alive -1
        assert _condition(status, "WarmModels")["message"] == f"{QWEN}: warm"
        shown = _ok(llmctl, "backend", "get", "gpu-0").out
        (row,) = [s.split() for s in shown.splitlines() if s.startswith(QWEN)]
        assert row[-3:] == [*output.size(model["sizeVram"]).split(), "never"], (
            shown
        )  # VRAM, EXPIRES
        _ok(llmctl, "backend", "update", "gpu-0", "--vram", "1GB")
        _ok(llmctl, "model", "add", LLAMA, "--warm")
        dry = _ok(llmctl, "reconcile", "--once", "--dry-run")
        numbers = "left cold: needs 1.3 GB, 0.6 GB of 1.0 GB VRAM free"
        assert f"drift on gpu-0: {LLAMA} cold ({numbers})" in dry.out, dry.out
        _ok(llmctl, "reconcile", "--once")
        assert [emu.nodes[n].preloads[LLAMA] for n in range(2)] == [0, 1]
        cold = _condition(_status(llmctl, "gpu-0"), "WarmModels")
        assert (cold["status"], cold["reason"]) == (False, "cold_budget"), cold
        assert cold["message"] == f"{LLAMA}: {numbers}; {QWEN}: warm", cold


def test_a_pull_past_the_declared_disk_is_held_with_the_numbers_until_room_appears(
    llmctl: Cli, nats_url: str, nats_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    with ollama.in_thread() as emu:
        monkeypatch.setenv("LLMCTL_REGISTRY_URL", emu.url)
        _ok(
            llmctl, "backend", "add", "gpu-0", "--type", "ollama", "--url", emu.url, "--disk", "1GB"
        )
        _ok(llmctl, "model", "add", "llama3.2")
        numbers = "needs 2.0 GB, 1 GB free of 1 GB"
        assert numbers in _ok(llmctl, "reconcile", "--once", "--dry-run").out
        _, heard = _heard(nats_url, nats_prefix, lambda: llmctl(*bus, "reconcile", "--once"))
        assert (heard[0]["pulls"], heard[0]["drift"]) == (0, 1), heard[0]  # held, as drift
        assert numbers in _ok(llmctl, "backend", "get", "gpu-0").out
        assert emu.nodes[0].requests["POST /api/pull"] == 0  # nothing pulled
        _ok(llmctl, "backend", "update", "gpu-0", "--disk", "20GB")
        _, heard = _heard(nats_url, nats_prefix, lambda: llmctl(*bus, "reconcile", "--once"))
        assert heard[0]["pulls"] == 1  # queued in the next cycle
        _ok(llmctl, "reconcile", "--once", "--wait", "--timeout", "30")
        assert emu.nodes[0].pulls["llama3.2:latest"] == 1
