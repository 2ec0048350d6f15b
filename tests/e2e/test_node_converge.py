"""A vLLM GPU node converges through the CLI: a node backend and a model with engine arguments
declared, ``reconcile --once --wait`` pulls the weights (progress on NATS), starts the instance
with exactly those arguments on a GPU of the agent's, and ``resolve`` routes the official
``openai`` client to it; removing the model from its pool stops the instance within one cycle
and deletes or keeps the weights per the backend's prune policy.

Real processes throughout: ``llmctl node serve`` agents, the emulated Hub pulled by the real
``huggingface_hub``, ``llmctl emulate vllm`` as each instance, NATS and (parametrized) Postgres.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import nats
import openai
import pytest
from nats.aio.msg import Msg

from dwqueue import flushing
from tests.e2e import node_fleet
from tests.e2e.conftest import Cli
from tests.integration import node_agent_process
from tests.integration import node_instances_fixtures as fx

# Real agent processes take seconds per test and what they exercise does not depend on the
# database: run once, on Postgres (the production store), not on SQLite as well.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

MODEL = "org/converge"
OTHER = "org/keeper"


def _declare(llmctl: Cli, agents: list[node_fleet.Agent], prune: str = "managed") -> None:
    """Pool `gpus` with every agent as a node backend gpu-<i> and MODEL with engine arguments."""
    node_fleet.ok(llmctl, "pool", "create", "gpus")
    for index, agent in enumerate(agents):
        node_fleet.ok(llmctl, "backend", "add", f"gpu-{index}", "--type", "node", "--url",
                      agent.url, "--api-key-env", "NODE_TOKEN", "--pool", "gpus",
                      "--prune", prune)  # fmt: skip
    node_fleet.ok(llmctl, "model", "add", MODEL, "--pool", "gpus", "--vllm-max-model-len",
                  "4096", "--vllm-dtype", "half")  # fmt: skip


async def _reconcile_hearing_downloads(
    llmctl: Cli, nats_url: str, prefix: str, *args: str
) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """Runs ``reconcile`` with NATS while subscribed to every download subject of the prefix;
    returns its result and the events heard (subject, payload) in order."""
    heard: list[tuple[str, dict[str, Any]]] = []
    client = await nats.connect(nats_url)

    async def hear(msg: Msg) -> None:
        heard.append((msg.subject, json.loads(msg.data)))

    try:
        await client.subscribe(f"{prefix}.v1.downloads.>", cb=hear)
        await flushing.flush(client, 10)  # the server has the SUB
        nats_args = ("--nats-url", nats_url, "--subject-prefix", prefix)
        result = await asyncio.to_thread(llmctl, *nats_args, "reconcile", *args)
        await flushing.flush(client, 10)
        await _settle(heard)
    finally:
        await client.close()
    return result, heard


async def _settle(heard: list[tuple[str, dict[str, Any]]]) -> None:
    """Waits (bounded) until the final event of the download has been delivered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not any(event["type"] == "succeeded" for _, event in heard):
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.02)


def _chat(base_url: str, model: str) -> str:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30)
    try:
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}]
        )
    finally:
        client.close()
    assert answer.model == model
    return answer.choices[0].message.content or ""


async def test_reconcile_wait_pulls_the_weights_with_progress_and_serves_the_declared_instance(
    llmctl: Cli,
    tmp_path: pathlib.Path,
    nats_url: str,
    nats_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NODE_TOKEN", node_fleet.TOKEN)
    with node_fleet.fleet(tmp_path, agents=1, repos=[MODEL]) as (agent,):
        await asyncio.to_thread(_declare, llmctl, [agent])
        result, heard = await _reconcile_hearing_downloads(
            llmctl, nats_url, nats_prefix, "--once", "--wait", "--timeout", "60"
        )
        assert result.code == 0, result.out + result.err

        served = agent.instances()[MODEL]
        devices = node_fleet.cuda_devices(served["pid"])
        doc = await asyncio.to_thread(
            node_fleet.ok, llmctl, "backend", "get", "gpu-0", "-o", "json"
        )
        chosen = await asyncio.to_thread(node_fleet.ok, llmctl, "resolve", MODEL, "-o", "json")
        said = await asyncio.to_thread(_chat, served["base_url"], MODEL)

    subjects = {subject for subject, _ in heard}
    (subject,) = subjects
    job_id = subject.rsplit(".", 1)[1]
    types = [event["type"] for _, event in heard]
    progress = [event for _, event in heard if event["type"] == "progress"]
    assert subject == f"{nats_prefix}.v1.downloads.gpu-0.{job_id}"
    assert types[-1] == "succeeded", types
    assert progress, types
    assert all(event["total"] and event["completed"] is not None for event in progress)
    assert {(event["backend"], event["model"], event["job_id"]) for _, event in heard} == {
        ("gpu-0", MODEL, job_id)
    }

    assert served["state"] == "ready"
    assert served["argv"] == [
        node_agent_process.LLMCTL, "emulate", "vllm", "--host", "127.0.0.1", "--port", str(served["port"]),
        "--served-model-name", MODEL, "--model", served["path"],
        "--max-model-len", "4096", "--dtype", "half",
    ]  # fmt: skip
    assert served["gpus"] == [0]
    assert devices == "0"
    assert doc.json()["status"]["phase"] == "Ready"
    assert [(i["name"], i["state"]) for i in doc.json()["status"]["instances"]] == [
        (MODEL, "ready")
    ]
    assert chosen.json()["provider"]["backend"] == "gpu-0"
    assert chosen.json()["provider"]["baseUrl"] == served["base_url"]
    assert said


@pytest.mark.parametrize(("prune", "weights_kept"), [("managed", False), ("none", True)])
def test_removing_a_model_from_its_pool_stops_its_instance_in_one_cycle_and_prunes_per_policy(
    llmctl: Cli,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    prune: str,
    weights_kept: bool,
) -> None:
    monkeypatch.setenv("NODE_TOKEN", node_fleet.TOKEN)
    with node_fleet.fleet(tmp_path, 1, [MODEL, OTHER], gpus="2x24GiB") as (agent,):
        _declare(llmctl, [agent], prune=prune)
        node_fleet.ok(llmctl, "model", "add", OTHER, "--pool", "gpus")
        node_fleet.ok(llmctl, "reconcile", "--once", "--wait", "--timeout", "60")
        before = agent.instances()
        gone = before[MODEL]
        group = node_fleet.pgid_of(gone["pid"])
        assert node_fleet.group_alive(group)
        assert fx.accepts(gone["port"])

        node_fleet.ok(llmctl, "pool", "remove-model", "gpus", MODEL)
        cycle = node_fleet.ok(llmctl, "reconcile", "--once")

        after = agent.instances()
        weights = agent.weights()
        port_free = not fx.accepts(gone["port"])
        group_left = node_fleet.group_alive(group)
        pid_left = fx.alive(gone["pid"])
        node_fleet.ok(llmctl, "reconcile", "--once")  # the status shows what a cycle observed
        doc = node_fleet.ok(llmctl, "backend", "get", "gpu-0", "-o", "json").json()

    assert "stop instance" in cycle.out, cycle.out
    assert list(after) == [OTHER]
    assert after[OTHER]["pid"] == before[OTHER]["pid"]
    assert after[OTHER]["state"] == "ready"
    assert (pid_left, group_left, port_free) == (False, False, True)
    assert weights == ([MODEL, OTHER] if weights_kept else [OTHER])
    assert [i["name"] for i in doc["status"]["instances"]] == [OTHER]
