"""The node agent's instance and inventory routes in process, the emulated vLLM as the instance.

`nodeagent.api.build` with a supervisor over a declared one-GPU inventory is served on a real
loopback socket; each instance is a real ``llmctl emulate vllm`` process. Weights are local
directories recorded through the API's own pull, so no hub is needed.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import test_utils

from nodeagent import api, gpus, instances, processes, weights
from tests.integration import node_instances_fixtures as fx

TOKEN = "s3cret-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = test_utils.TestClient[Any, Any]


@pytest.fixture
async def agent(tmp_path: pathlib.Path) -> AsyncIterator[Client]:
    inventory = gpus.Inventory(gpus.parse("1x24GiB"))
    supervisor = instances.Supervisor(tmp_path / "state", inventory, fx.settings())
    cache = weights.Cache(tmp_path / "cache")
    app = api.build(cache, token=TOKEN, supervisor=supervisor)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


async def _weights(agent: Client, tmp_path: pathlib.Path, name: str) -> str:
    """Records a local weights directory through the API; returns its name (its path)."""
    local = tmp_path / name
    local.mkdir()
    (local / "config.json").write_text("{}")
    response = await agent.post("/v1/weights/pull", json={"source": str(local)}, headers=AUTH)
    last = json.loads((await response.text()).splitlines()[-1])
    assert last["status"] == "success"
    return str(local)


async def _ready(agent: Client, name: str) -> dict[str, Any]:
    shown: dict[str, Any] = {}

    async def is_ready() -> bool:
        nonlocal shown
        shown = await (await agent.get(f"/v1/instances/{name}", headers=AUTH)).json()
        return shown.get("state") == "ready"

    await fx.eventually_async(is_ready, f"{name} to be ready")
    return shown


async def test_a_put_instance_becomes_ready_and_its_base_url_answers_the_openai_client(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    source = await _weights(agent, tmp_path, "qwen")
    body = {"weights": source, "engine": {"max_model_len": 2048}, "gpus": 1}

    created = await agent.put("/v1/instances/Qwen/chat", json=body, headers=AUTH)
    again = await agent.put("/v1/instances/Qwen/chat", json=body, headers=AUTH)
    shown = await _ready(agent, "Qwen/chat")
    listed = await (await agent.get("/v1/instances", headers=AUTH)).json()
    held = await (await agent.get("/v1/inventory", headers=AUTH)).json()
    client = openai.AsyncOpenAI(base_url=shown["base_url"], api_key="unused")
    models = await client.models.list()
    reply = await client.chat.completions.create(
        model="Qwen/chat", messages=[{"role": "user", "content": "hello"}]
    )
    await client.close()

    assert (created.status, (await created.json())["state"]) == (201, "starting")
    assert again.status == 200  # the same spec: the running instance, not a second one
    assert shown["base_url"] == f"http://127.0.0.1:{shown['port']}/v1"
    assert (shown["path"], shown["gpus"], shown["restarts"]) == (source, [0], 0)
    assert shown["argv"][-2:] == ["--max-model-len", "2048"]
    assert [i["name"] for i in listed["instances"]] == ["Qwen/chat"]
    assert held == {
        "gpus": [{"index": 0, "name": "declared", "memory": 24 * 2**30, "holder": "Qwen/chat"}],
        "free": 0,
    }
    assert [m.id for m in models.data] == ["Qwen/chat"]
    assert reply.choices[0].message.content


async def test_a_second_model_on_a_one_gpu_node_is_refused_with_the_numbers_until_the_first_stops(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    first = await _weights(agent, tmp_path, "first")
    second = await _weights(agent, tmp_path, "second")
    await agent.put("/v1/instances/first", json={"weights": first}, headers=AUTH)
    running = await _ready(agent, "first")

    refused = await agent.put("/v1/instances/second", json={"weights": second}, headers=AUTH)
    refusal = await refused.json()
    stopped = await agent.delete("/v1/instances/first", headers=AUTH)
    gone = processes.group_members(running["pid"])
    freed = await (await agent.get("/v1/inventory", headers=AUTH)).json()
    started = await agent.put("/v1/instances/second", json={"weights": second}, headers=AUTH)
    now = await _ready(agent, "second")
    absent = await agent.get("/v1/instances/first", headers=AUTH)

    assert refused.status == 409
    assert refusal["class"] == "unplaceable"
    assert "needs 1 GPU, 0 free" in refusal["error"]
    assert (refusal["needed"], refusal["free"]) == (1, 0)
    assert (stopped.status, await stopped.json()) == (200, {"stopped": "first"})
    assert gone == []  # the whole process group ended
    assert not fx.accepts(running["port"])
    assert freed["gpus"][0]["holder"] is None
    assert freed["free"] == 1
    assert started.status == 201
    assert now["gpus"] == [0]
    assert absent.status == 404


async def test_weights_in_use_by_an_instance_are_not_deleted_until_it_stops(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    source = await _weights(agent, tmp_path, "busy")
    await agent.put("/v1/instances/busy", json={"weights": source}, headers=AUTH)

    refused = await agent.delete(f"/v1/weights/{source}", headers=AUTH)
    refusal = await refused.json()
    listed = await (await agent.get("/v1/weights", headers=AUTH)).json()
    await agent.delete("/v1/instances/busy", headers=AUTH)
    deleted = await agent.delete(f"/v1/weights/{source}", headers=AUTH)

    assert refused.status == 409
    assert (refusal["class"], refusal["instances"]) == ("in_use", ["busy"])
    assert "stop them first" in refusal["error"]
    assert [w["name"] for w in listed["weights"]] == [source]
    assert deleted.status == 200


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"weights": "org/absent"}, 409, "are not in the cache: pull them first"),
        ({"weights": "{w}", "name": "x"}, 400, "unknown field(s) name"),
        ({"weights": "{w}", "engine": {"max_len": 1}}, 400, "unknown engine field(s) max_len"),
        ({"weights": "{w}", "engine": {"enable_lora": "yes"}}, 400, "engine.enable_lora must be"),
        ({"weights": "{w}", "engine": {"dtype": "fp3"}}, 400, "dtype must be one of"),
        ({"weights": "{w}", "gpus": "1"}, 400, "gpus must be a whole number"),
        ({"weights": "{w}", "gpu_memory": "lots"}, 400, "is not a memory size"),
        ({"weights": "{w}", "gpu_memory": "80GiB"}, 409, "needs 1 GPU with 80 GiB, 0 free"),
        ([], 400, "not a JSON object"),
    ],
)
async def test_a_bad_put_is_refused_with_its_reason_and_starts_nothing(
    agent: Client, tmp_path: pathlib.Path, body: Any, status: int, says: str
) -> None:
    source = await _weights(agent, tmp_path, "w")
    if isinstance(body, dict):
        body = {k: (source if v == "{w}" else v) for k, v in body.items()}

    response = await agent.put("/v1/instances/m", json=body, headers=AUTH)
    answer = await response.json()
    listed = await (await agent.get("/v1/instances", headers=AUTH)).json()

    assert response.status == status
    assert says in answer["error"]
    assert listed == {"instances": []}
    assert not (tmp_path / "state" / "logs").exists()


async def test_the_instance_routes_answer_401_without_the_token(agent: Client) -> None:
    calls = [
        agent.get("/v1/inventory"),
        agent.get("/v1/instances"),
        agent.get("/v1/instances/m"),
        agent.put("/v1/instances/m", json={"weights": "/x"}),
        agent.delete("/v1/instances/m", headers={"Authorization": "Bearer wrong"}),
    ]
    for call in calls:
        response = await call
        assert response.status == 401
        assert TOKEN not in await response.text()
    served = await agent.get("/v1/inventory", headers=AUTH)
    assert served.status == 200  # the routes exist: the 401 is the token's, not a 404's


async def test_an_instance_whose_command_exits_at_once_shows_crashloopbackoff_with_its_log_tail(
    tmp_path: pathlib.Path,
) -> None:
    inventory = gpus.Inventory(gpus.parse("1x24GiB"))
    failing = fx.settings(fx.shell("echo 'CUDA out of memory' >&2; exit 3"))
    supervisor = instances.Supervisor(tmp_path / "state", inventory, failing)
    app = api.build(weights.Cache(tmp_path / "cache"), token=TOKEN, supervisor=supervisor)
    async with test_utils.TestClient(test_utils.TestServer(app)) as agent:
        source = await _weights(agent, tmp_path, "oom")
        await agent.put("/v1/instances/oom", json={"weights": source}, headers=AUTH)
        shown: dict[str, Any] = {}

        async def looping() -> bool:
            nonlocal shown
            shown = await (await agent.get("/v1/instances/oom", headers=AUTH)).json()
            return bool(shown["state"] == "CrashLoopBackOff")

        await fx.eventually_async(looping, "CrashLoopBackOff")

    assert shown["restarts"] >= 3
    assert "exited with code 3" in shown["last_error"]
    assert "CUDA out of memory" in shown["log_tail"]


async def test_an_instance_reports_the_spec_it_runs_so_the_controller_can_compare_it(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    source = await _weights(agent, tmp_path, "specced")
    engine = {"max_model_len": 2048, "dtype": "half", "extra_args": ["--seed=1"]}
    body = {"weights": source, "engine": engine, "gpus": 1}

    created = await (await agent.put("/v1/instances/specced", json=body, headers=AUTH)).json()
    listed = await (await agent.get("/v1/instances", headers=AUTH)).json()

    assert created["weights"] == source
    assert created["gpus_requested"] == 1
    assert created["engine"] == {
        "max_model_len": 2048, "tensor_parallel_size": None, "gpu_memory_utilization": None,
        "dtype": "half", "quantization": None, "enable_lora": False, "extra_args": ["--seed=1"],
    }  # fmt: skip
    assert listed["instances"][0]["engine"] == created["engine"]
