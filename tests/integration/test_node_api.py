"""The node agent's HTTP API in process, pulling from the emulated Hugging Face Hub.

`nodeagent.api.build` is served on a real loopback socket by aiohttp's test server; the real
huggingface_hub client runs in the cache's worker thread against `hfhub.running` in the same
event loop. Files over 10 MiB are needed to see progress between the first and last line.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import test_utils

from emulators import hfhub
from nodeagent import api, weights

MIB = 1024 * 1024
TOKEN = "s3cret-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPOS = [
    hfhub.RepoSpec("org/model", {"config.json": b"{}", "model.safetensors": 24 * MIB}),
    hfhub.RepoSpec("org/gated", {"model.safetensors": 100}, gated=True, tokens=frozenset({"t"})),
]
MODEL_TOTAL = 24 * MIB + 2

Client = test_utils.TestClient[Any, Any]
MakeClient = Callable[..., Any]


@pytest.fixture
async def hub() -> AsyncIterator[hfhub.Emulator]:
    async with hfhub.running(repos=REPOS) as emu:
        yield emu


@pytest.fixture
async def agent(hub: hfhub.Emulator, tmp_path: pathlib.Path) -> AsyncIterator[Client]:
    cache = weights.Cache(tmp_path / "cache", endpoint=hub.url)
    async with test_utils.TestClient(test_utils.TestServer(api.build(cache, token=TOKEN))) as c:
        yield c


def _blobs(root: pathlib.Path) -> list[pathlib.Path]:
    return list(root.rglob("blobs/*"))


async def _lines(client: Client, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    response = await client.post("/v1/weights/pull", json=body, headers=AUTH)
    text = await response.text()
    return response.status, [json.loads(line) for line in text.splitlines()]


async def test_a_pull_streams_ndjson_progress_to_success_and_the_files_are_in_the_cache(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    response = await agent.post("/v1/weights/pull", json={"source": "org/model"}, headers=AUTH)
    lines = [json.loads(line) for line in (await response.text()).splitlines()]

    assert response.status == 200
    assert response.content_type == "application/x-ndjson"
    *steps, last = lines
    completed = [step["completed"] for step in steps]
    assert {step["status"] for step in steps} == {"pulling org/model"}
    assert {step["total"] for step in steps} == {MODEL_TOTAL}
    assert completed == sorted(completed)
    assert completed[0] == 0
    assert completed[-1] == MODEL_TOTAL
    assert any(0 < c < MODEL_TOTAL for c in completed)
    assert last["status"] == "success"
    assert last["weights"]["name"] == "org/model"
    snapshot = pathlib.Path(last["weights"]["path"])
    assert snapshot.is_relative_to(tmp_path / "cache")
    assert (snapshot / "model.safetensors").stat().st_size == 24 * MIB


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["no-header", "wrong-token", "no-scheme", "basic"],
)
async def test_every_route_but_health_answers_401_without_the_right_token(
    agent: Client, headers: dict[str, str], tmp_path: pathlib.Path
) -> None:
    calls = [
        agent.get("/v1/info", headers=headers),
        agent.get("/v1/weights", headers=headers),
        agent.post("/v1/weights/pull", json={"source": "org/model"}, headers=headers),
        agent.delete("/v1/weights/org/model", headers=headers),
    ]
    for call in calls:
        response = await call
        body = await response.json()
        assert response.status == 401
        assert "bearer token" in body["error"]
        assert TOKEN not in json.dumps(body)
    health = await agent.get("/v1/health", headers=headers)
    assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert _blobs(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"source": "../etc"}, "is not a valid name"),
        ({"source": "org/../../x"}, "has 4 parts"),
        ({"source": "org/model", "revision": "../../x"}, "is not a valid git ref"),
        ({"source": "/etc/../root"}, "has '..'"),
        ({"source": "relative/dir/x"}, "has 3 parts"),
        ({"source": "org/model", "token": "x"}, "unknown field(s) token"),
        ({"revision": "main"}, "source must be a string"),
    ],
)
async def test_an_invalid_pull_is_refused_with_400_and_writes_nothing(
    agent: Client, hub: hfhub.Emulator, tmp_path: pathlib.Path, body: dict[str, Any], says: str
) -> None:
    response = await agent.post("/v1/weights/pull", json=body, headers=AUTH)
    answer = await response.json()

    assert response.status == 400
    assert answer["class"] == "invalid"
    assert says in answer["error"]
    assert not (tmp_path / "cache" / "hub").exists()
    assert not hub.nodes[0].requests  # refused before asking the hub


async def test_a_model_larger_than_free_disk_is_refused_with_507_before_any_byte(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    tight = weights.Cache(
        tmp_path, endpoint=hub.url, disk_usage=lambda _: weights.DiskUsage(10**9, 0, 1000)
    )
    server = test_utils.TestServer(api.build(tight, token=TOKEN))
    async with test_utils.TestClient(server) as client:
        status, lines = await _lines(client, {"source": "org/model"})

    assert status == 507
    (answer,) = lines
    assert answer["class"] == "insufficient_disk"
    assert (answer["needed"], answer["free"]) == (MODEL_TOTAL, 1000)
    assert f"needs {MODEL_TOTAL} more bytes" in answer["error"]
    assert _blobs(tmp_path) == []
    assert hub.nodes[0].downloads == []


async def test_a_gated_repo_ends_the_stream_with_a_permanent_error_line_with_the_hubs_message(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    status, lines = await _lines(agent, {"source": "org/gated"})

    assert status == 200  # its info and tree are public: the refusal comes with the first file
    *steps, answer = lines
    assert [step["completed"] for step in steps] == [0]
    assert answer["class"] == "permanent"
    assert "org/gated@main is gated: Access to model org/gated is restricted" in answer["error"]
    assert _blobs(tmp_path / "cache") == []


async def test_a_missing_repo_is_refused_with_422_before_streaming(agent: Client) -> None:
    status, lines = await _lines(agent, {"source": "org/absent"})

    (answer,) = lines
    assert (status, answer["class"]) == (422, "permanent")
    assert "org/absent@main" in answer["error"]
    assert "missing, or private" in answer["error"]


async def test_a_hub_failure_midway_ends_the_stream_with_a_transient_error_line(
    agent: Client, hub: hfhub.Emulator
) -> None:
    hub.nodes[0].download_faults.append(hfhub.DownloadFault("model.safetensors", status=503))

    status, lines = await _lines(agent, {"source": "org/model"})

    assert status == 200
    assert lines[0]["completed"] == 0
    assert lines[-1]["class"] == "transient"
    assert "503" in lines[-1]["error"]
    assert "status" not in lines[-1]


async def test_pulled_weights_are_listed_and_deleted(agent: Client, tmp_path: pathlib.Path) -> None:
    await _lines(agent, {"source": "org/model"})
    listed = await (await agent.get("/v1/weights", headers=AUTH)).json()
    deleted = await agent.delete("/v1/weights/org/model", headers=AUTH)
    again = await agent.delete("/v1/weights/org/model", headers=AUTH)
    after = await (await agent.get("/v1/weights", headers=AUTH)).json()

    ((entry),) = listed["weights"]
    assert (entry["name"], entry["source"], entry["size"]) == ("org/model", "hub", MODEL_TOTAL)
    assert entry["refs"]["main"] == entry["commit"]
    assert (deleted.status, await deleted.json()) == (200, {"deleted": "org/model"})
    assert again.status == 404
    assert (await again.json())["class"] == "absent"
    assert after == {"weights": []}
    assert not (tmp_path / "cache" / "hub" / "models--org--model").exists()


async def test_a_local_directory_is_recorded_listed_and_forgotten_by_its_path(
    agent: Client, tmp_path: pathlib.Path
) -> None:
    local = tmp_path / "mine"
    local.mkdir()
    (local / "w.bin").write_bytes(b"x" * 10)

    status, lines = await _lines(agent, {"source": str(local)})
    listed = await (await agent.get("/v1/weights", headers=AUTH)).json()
    deleted = await agent.delete(f"/v1/weights/{local}", headers=AUTH)

    assert (status, lines[-1]["status"], lines[-1]["weights"]["size"]) == (200, "success", 10)
    assert [(w["name"], w["source"]) for w in listed["weights"]] == [(str(local), "local")]
    assert deleted.status == 200
    assert (local / "w.bin").read_bytes() == b"x" * 10  # forgotten, never deleted


async def test_info_names_the_api_version_the_cache_and_its_free_disk(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    cache = weights.Cache(tmp_path / "c", endpoint=hub.url)
    disk = weights.DiskUsage(5000, 1000, 4000)
    app = api.build(cache, token=TOKEN, disk_usage=lambda _: disk)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        answer = await (await client.get("/v1/info", headers=AUTH)).json()
        unknown = await client.get("/v1/nothing", headers=AUTH)
        unknown_body = await unknown.json()

    assert answer["api"] == "v1"
    assert answer["version"]
    assert answer["cache_dir"] == str(tmp_path / "c")
    assert answer["disk"] == {"total": 5000, "free": 4000}
    assert unknown.status == 404
    assert "see the routes of API v1" in unknown_body["error"]
