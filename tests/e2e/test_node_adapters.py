"""LoRA adapters on a vLLM GPU node converge through the CLI (issue 16).

A node backend, a model declared with ``--vllm-enable-lora`` and an adapter of it from a Hub
repo, all in one pool: ``reconcile --once --wait`` pulls the weights, starts the instance, and
once it is ready has the agent pull the adapter's files and load them into it. The instance
then lists the adapter with its base model as parent, ``resolve`` routes the adapter to the
instance's URL and the official ``openai`` client completes with it. An instance that restarts
forgets its adapters; the next cycle loads them again.

Real processes throughout: a ``llmctl node serve`` agent, the emulated Hub pulled by the real
``huggingface_hub``, ``llmctl emulate vllm`` as the instance, and Postgres.
"""

from __future__ import annotations

import os
import pathlib
import signal

import openai
import pytest

from tests.e2e import node_fleet
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

BASE = "org/base"
FILES = "org/sql-lora"


def _declare(llmctl: Cli, url: str, *lora: str) -> None:
    node_fleet.ok(llmctl, "pool", "create", "gpus")
    node_fleet.ok(llmctl, "backend", "add", "gpu-0", "--type", "node", "--url", url,
                  "--api-key-env", "NODE_TOKEN", "--pool", "gpus")  # fmt: skip
    node_fleet.ok(llmctl, "model", "add", BASE, "--pool", "gpus", *lora)
    node_fleet.ok(llmctl, "adapter", "add", "sql", "--base-model", BASE, "--source", FILES,
                  "--pool", "gpus")  # fmt: skip


def _complete(base_url: str) -> str:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30)
    try:
        answer = client.chat.completions.create(
            model="sql", messages=[{"role": "user", "content": "SELECT"}]
        )
    finally:
        client.close()
    assert answer.model == "sql"
    return answer.choices[0].message.content or ""


def test_reconcile_loads_a_declared_adapter_into_its_base_models_instance_and_routes_to_it(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_TOKEN", node_fleet.TOKEN)
    with node_fleet.fleet(tmp_path, 1, [BASE, FILES]) as (agent,):
        _declare(llmctl, agent.url, "--vllm-enable-lora")
        waited = llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        served = agent.instances()[BASE]
        weights = agent.weights()
        cards = agent.api.get(served["base_url"] + "/models").json()["data"]
        chosen = node_fleet.ok(llmctl, "resolve", "sql", "-o", "json").json()
        said = _complete(served["base_url"])

        os.kill(served["pid"], signal.SIGKILL)  # a crash: the restarted instance forgets "sql"
        node_fleet.eventually(
            lambda: (
                agent.instances()[BASE]["restarts"] == 1
                and agent.instances()[BASE]["state"] == "ready"
            ),
            "the instance to restart",
        )
        forgotten = agent.instances()[BASE]["adapters"]
        again = llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        reloaded = agent.instances()[BASE]["adapters"]

    assert waited.code == 0, waited.out + waited.err
    assert served["adapters"] == [
        {"name": "sql", "parent": BASE, "path": served["adapters"][0]["path"]}
    ]
    assert FILES in weights
    assert {c["id"]: c.get("parent") for c in cards} == {BASE: None, "sql": BASE}
    assert chosen["provider"]["backend"] == "gpu-0"
    assert chosen["provider"]["baseUrl"] == served["base_url"]
    assert said
    assert forgotten == []
    assert again.code == 0, again.out + again.err
    assert [a["name"] for a in reloaded] == ["sql"]


def test_an_adapter_of_a_model_started_without_lora_is_drift_naming_the_setting(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_TOKEN", node_fleet.TOKEN)
    with node_fleet.fleet(tmp_path, 1, [BASE, FILES]) as (agent,):
        _declare(llmctl, agent.url)
        waited = llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        served = agent.instances()[BASE]
        weights = agent.weights()
        doc = node_fleet.ok(llmctl, "backend", "get", "gpu-0", "-o", "json").json()

    assert served["state"] == "ready"
    assert served["adapters"] == []
    assert FILES not in weights  # nothing was pulled for it
    assert "model org/base is not started with vllm.enableLora" in node_fleet.rows(doc["status"])
    assert "not started with vllm.enableLora" in waited.out
    assert waited.code == 1  # an adapter placed and not loaded: not converged
    assert "not converged" in waited.out
