"""Pulls through the node agent's API when clients leave: shared, and stopped by the last one.

The controller cancels a download by closing its stream; the agent then stops pulling from the
hub within a network read. The emulated hub paces every body (`pull_rate`) and logs each file
GET with the bytes it sent and how it ended ("client gone" when the agent hung up), so a test
sees from the hub's side that no further byte went out. The real huggingface_hub client runs in
the cache's worker threads against `hfhub.running` in the same event loop.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils

from emulators import hfhub, hfhub_node
from nodeagent import api, weights

MIB = 1024 * 1024
TOKEN = "s3cret-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL, BIG = 1 * MIB, 24 * MIB
REPOS = [hfhub.RepoSpec("org/two", {"small.safetensors": SMALL, "big.safetensors": BIG})]

Client = test_utils.TestClient[Any, Any]


@pytest.fixture
async def hub() -> AsyncIterator[hfhub.Emulator]:
    async with hfhub.running(repos=REPOS) as emu:
        yield emu


@pytest.fixture
async def agent(hub: hfhub.Emulator, tmp_path: pathlib.Path) -> AsyncIterator[Client]:
    cache = weights.Cache(tmp_path / "cache", endpoint=hub.url)
    async with test_utils.TestClient(test_utils.TestServer(api.build(cache, token=TOKEN))) as c:
        yield c


async def _until(check: Any, what: str, seconds: float) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while not (found := check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return found


def _gone(hub: hfhub.Emulator) -> list[hfhub_node.Download]:
    return [d for d in hub.nodes[0].downloads if d.path == "big.safetensors"]


async def test_a_pull_whose_only_client_leaves_stops_at_once_and_the_next_pull_resumes(
    agent: Client, hub: hfhub.Emulator
) -> None:
    hub.nodes[0].pull_rate = 4 * MIB  # six seconds for the big file, a quarter for the small
    response = await agent.post("/v1/weights/pull", json={"source": "org/two"}, headers=AUTH)
    first = json.loads(await response.content.readline())
    second = json.loads(await response.content.readline())  # the small file is on disk
    response.close()  # the client goes away: nobody else waits for this pull

    (cut,) = await _until(lambda: _gone(hub), "the hub to see the agent hang up", 3.0)
    hub.nodes[0].pull_rate = None
    again = await agent.post("/v1/weights/pull", json={"source": "org/two"}, headers=AUTH)
    lines = [json.loads(line) for line in (await again.text()).splitlines()]
    fetched = await _until(lambda: hub.nodes[0].downloads[2:], "the hub's log of the GET", 5.0)

    assert (first["completed"], second["completed"]) == (0, SMALL)
    assert cut.outcome == "client gone"
    assert 0 < cut.sent < BIG
    assert lines[0]["completed"] == SMALL  # the finished file stayed in the cache
    assert lines[-1]["status"] == "success"
    assert [(d.path, d.outcome) for d in fetched] == [("big.safetensors", "complete")]


async def test_a_pull_goes_on_while_another_client_still_waits_for_it(
    agent: Client, hub: hfhub.Emulator
) -> None:
    hub.nodes[0].pull_rate = 16 * MIB
    leaving = await agent.post("/v1/weights/pull", json={"source": "org/two"}, headers=AUTH)
    await leaving.content.readline()
    staying = await agent.post("/v1/weights/pull", json={"source": "org/two"}, headers=AUTH)
    joined = json.loads(await staying.content.readline())
    leaving.close()
    lines = [json.loads(line) for line in (await staying.text()).splitlines()]
    fetched = await _until(lambda: _gone(hub), "the hub's log of the GET", 5.0)

    assert joined["total"] == SMALL + BIG
    assert lines[-1]["status"] == "success"
    assert [(d.path, d.outcome) for d in fetched] == [("big.safetensors", "complete")]
