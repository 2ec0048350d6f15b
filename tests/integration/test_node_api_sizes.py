"""The node agent's ``GET /v1/weights/size``: a pull's bytes before pulling (issue 16).

Served in process by aiohttp's test server; the real huggingface_hub client asks the emulated
hub (`hfhub.running`) for the revision's file tree.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils

from emulators import hfhub
from nodeagent import api, weights

MIB = 1024 * 1024
TOKEN = "s3cret-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPOS = [
    hfhub.RepoSpec("org/model", {"config.json": b"{}", "model.safetensors": 3 * MIB}),
    hfhub.RepoSpec("org/other", {"model.safetensors": 5 * MIB}),
]
Client = test_utils.TestClient[Any, Any]


@pytest.fixture
async def agent(tmp_path: pathlib.Path) -> AsyncIterator[Client]:
    async with hfhub.running(repos=REPOS) as hub:
        cache = weights.Cache(tmp_path / "cache", endpoint=hub.url)
        server = test_utils.TestServer(api.build(cache, token=TOKEN))
        async with test_utils.TestClient(server) as client:
            yield client


async def _size(agent: Client, query: str) -> tuple[int, dict[str, Any]]:
    reply = await agent.get(f"/v1/weights/size?{query}", headers=AUTH)
    return reply.status, await reply.json()


async def test_the_size_of_a_repo_is_its_files_and_nothing_is_present_before_a_pull(
    agent: Client,
) -> None:
    status, body = await _size(agent, "source=org/model")
    assert status == 200
    assert (body["bytes"], body["present"]) == (3 * MIB + 2, 0)
    assert len(body["commit"]) == 40


async def test_bytes_already_in_the_cache_count_as_present(agent: Client) -> None:
    pulled = await agent.post("/v1/weights/pull", json={"source": "org/model"}, headers=AUTH)
    assert pulled.status == 200
    await pulled.text()
    status, body = await _size(agent, "source=org/model&revision=main")
    assert status == 200
    assert body["bytes"] == body["present"] == 3 * MIB + 2
    assert (await _size(agent, "source=org/other"))[1]["present"] == 0


async def test_sizing_a_missing_repo_or_a_bad_source_is_refused_with_the_pull_errors(
    agent: Client,
) -> None:
    missing_status, missing = await _size(agent, "source=org/nope")
    assert (missing_status, missing["class"]) == (422, "permanent")
    for query in ("", "source=/srv/weights", "source=a/b/c"):
        status, body = await _size(agent, query)
        assert (status, body["class"]) == (400, "invalid"), query
