"""LoRA adapters loaded into a node agent's instances through its API (issue 16).

`nodeagent.api.build` with a supervisor is served on a real loopback socket; each instance is a
real ``llmctl emulate vllm`` process (with ``--enable-lora`` when its engine asks), and the
adapter's files come from the emulated Hugging Face Hub through the agent's weights cache.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import test_utils

from emulators import hfhub
from nodeagent import api, gpus, instances, weights
from tests.integration import node_instances_fixtures as fx

TOKEN = "s3cret-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADAPTER = "org/sql-lora"
REPOS = [hfhub.RepoSpec(ADAPTER, {"adapter_config.json": 64, "adapter_model.safetensors": 4096})]
Client = test_utils.TestClient[Any, Any]

# The instance command records whether runtime LoRA updating was allowed in its environment.
_ENV_PROBE = 'echo "lora-updating=${VLLM_ALLOW_RUNTIME_LORA_UPDATING:-unset}"'


@pytest.fixture
async def hub() -> AsyncIterator[hfhub.Emulator]:
    async with hfhub.running(repos=REPOS) as emu:
        yield emu


@pytest.fixture
async def agent(hub: hfhub.Emulator, tmp_path: pathlib.Path) -> AsyncIterator[Client]:
    inventory = gpus.Inventory(gpus.parse("2x24GiB"))
    settings = fx.settings(template=fx.shell(_ENV_PROBE))
    environment = {k: v for k, v in os.environ.items() if k != "VLLM_ALLOW_RUNTIME_LORA_UPDATING"}
    supervisor = instances.Supervisor(
        tmp_path / "state", inventory, settings, environment=environment
    )
    cache = weights.Cache(tmp_path / "cache", endpoint=hub.url)
    app = api.build(cache, token=TOKEN, supervisor=supervisor)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


def _files(folder: str) -> set[str]:
    return {p.name for p in pathlib.Path(folder).iterdir()}


async def _instance(
    agent: Client, tmp_path: pathlib.Path, name: str, enable_lora: bool
) -> dict[str, Any]:
    """Starts `name` from a local weights directory and waits until it is ready."""
    local = tmp_path / name.replace("/", "_")
    local.mkdir()
    (local / "config.json").write_text("{}")
    pulled = await agent.post("/v1/weights/pull", json={"source": str(local)}, headers=AUTH)
    assert json.loads((await pulled.text()).splitlines()[-1])["status"] == "success"
    body = {"weights": str(local), "engine": {"enable_lora": enable_lora}, "gpus": 1}
    started = await agent.put(f"/v1/instances/{name}", json=body, headers=AUTH)
    assert started.status == 201, await started.text()
    shown: dict[str, Any] = {}

    async def is_ready() -> bool:
        nonlocal shown
        shown = await (await agent.get(f"/v1/instances/{name}", headers=AUTH)).json()
        return shown.get("state") == "ready"

    await fx.eventually_async(is_ready, f"{name} to be ready")
    return shown


async def test_a_put_adapter_pulls_its_files_and_the_instance_serves_it_with_its_parent(
    agent: Client, hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    shown = await _instance(agent, tmp_path, "Qwen/base", enable_lora=True)

    loaded = await agent.put(
        "/v1/instances/Qwen/base/adapters/sql", json={"source": ADAPTER}, headers=AUTH
    )
    again = await agent.put(
        "/v1/instances/Qwen/base/adapters/sql", json={"source": ADAPTER}, headers=AUTH
    )
    answer = await loaded.json()
    cached = await (await agent.get("/v1/weights", headers=AUTH)).json()
    described = await (await agent.get("/v1/instances/Qwen/base", headers=AUTH)).json()
    listed = await (await agent.get("/v1/instances", headers=AUTH)).json()
    client = openai.AsyncOpenAI(base_url=shown["base_url"], api_key="unused")
    cards = {m.id: m.model_dump() for m in (await client.models.list()).data}
    reply = await client.chat.completions.create(
        model="sql", messages=[{"role": "user", "content": "select"}]
    )
    await client.close()
    logs = [p.read_text() for p in (tmp_path / "state" / "logs").glob("*.log")]

    assert (loaded.status, again.status) == (200, 200)  # loading twice is loading once
    assert answer["loaded"] == "sql"
    assert answer["source"] == ADAPTER
    assert "adapter_model.safetensors" in _files(answer["path"])
    assert ADAPTER in {w["name"] for w in cached["weights"]}
    assert cards["sql"]["parent"] == "Qwen/base"
    assert cards["sql"]["root"] == answer["path"]
    expected = [{"name": "sql", "parent": "Qwen/base", "path": answer["path"]}]
    assert described["adapters"] == expected
    assert listed["instances"][0]["adapters"] == expected
    assert reply.model == "sql"
    assert reply.choices[0].message.content
    assert any("lora-updating=True" in text for text in logs)


async def test_a_delete_adapter_unloads_it_and_a_second_delete_is_404(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    await _instance(agent, tmp_path, "base", enable_lora=True)
    path = "/v1/instances/base/adapters/sql"
    await agent.put(path, json={"source": ADAPTER}, headers=AUTH)

    unloaded = await agent.delete(path, headers=AUTH)
    gone = await agent.delete(path, headers=AUTH)
    described = await (await agent.get("/v1/instances/base", headers=AUTH)).json()

    assert (unloaded.status, await unloaded.json()) == (
        200,
        {"unloaded": "sql", "instance": "base"},
    )
    assert (gone.status, (await gone.json())["class"]) == (404, "absent")
    assert described["adapters"] == []


async def test_an_adapter_refusal_names_the_instance_problem_and_loads_nothing(
    agent: Client, hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    await _instance(agent, tmp_path, "plain", enable_lora=False)

    absent = await agent.put(
        "/v1/instances/nobody/adapters/sql", json={"source": ADAPTER}, headers=AUTH
    )
    disabled = await agent.put(
        "/v1/instances/plain/adapters/sql", json={"source": ADAPTER}, headers=AUTH
    )
    bad = await agent.put("/v1/instances/plain/adapters/sql", json={"src": "x"}, headers=AUTH)
    await _instance(agent, tmp_path, "lora", enable_lora=True)
    missing = await agent.put(
        "/v1/instances/lora/adapters/sql", json={"source": "org/missing"}, headers=AUTH
    )
    described = await (await agent.get("/v1/instances/plain", headers=AUTH)).json()

    assert (absent.status, (await absent.json())["class"]) == (404, "absent")
    refusal = await disabled.json()
    assert (disabled.status, refusal["class"]) == (409, "lora_disabled")
    assert "--enable-lora" in refusal["error"]
    assert "enableLora" in refusal["error"]
    assert (bad.status, (await bad.json())["class"]) == (400, "invalid")
    assert (missing.status, (await missing.json())["class"]) == (422, "permanent")
    assert described["adapters"] == []
    cached = await (await agent.get("/v1/weights", headers=AUTH)).json()
    assert ADAPTER not in {w["name"] for w in cached["weights"]}  # refused before any pull
