"""A restarted node agent adopts or stops what the previous one left running (real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from nodeagent import gpus, instance, instances
from tests.integration import node_instances_fixtures as fx

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def left(state_dir: pathlib.Path) -> Iterator[list[int]]:
    """Pids a failed test may leave running; killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        fx.kill_if_alive(pid)


async def _dead_agent(state_dir: pathlib.Path, *names: str) -> dict[str, dict[str, Any]]:
    """Runs an agent in its own process until its instances are ready, then SIGKILLs it."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.node_agent_child",
        str(state_dir),
        *names,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(agent.stdout.readline(), 60)
    finally:
        agent.kill()
        await agent.wait()
    shown: dict[str, dict[str, Any]] = json.loads(line)
    return shown


@pytest.fixture
async def successor(state_dir: pathlib.Path) -> AsyncIterator[instances.Supervisor]:
    """The agent that starts after the dead one, over the same state dir."""
    supervisor = instances.Supervisor(
        state_dir, gpus.Inventory(gpus.parse("2x80GiB")), fx.settings()
    )
    yield supervisor
    await supervisor.close()


async def test_a_restarted_agent_adopts_a_live_instance_and_stops_one_it_cannot_adopt(
    state_dir: pathlib.Path, successor: instances.Supervisor, left: list[int]
) -> None:
    shown = await _dead_agent(state_dir, "kept", "sick")
    kept, sick = shown["kept"], shown["sick"]
    left += [kept["pid"], kept["child"], sick["pid"], sick["child"]]
    assert all(fx.alive(pid) for pid in left), "the instances outlive their agent"
    async with httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{sick['port']}/_emulator/state"
        assert (await client.post(url, json={"healthy": False})).status_code == 200

    assert await successor.open() == {"kept": "adopted", "sick": "stopped"}

    assert not fx.alive(sick["pid"])
    assert not fx.alive(sick["child"])
    assert not fx.accepts(sick["port"])
    [adopted] = successor.list()
    assert (adopted.name, adopted.pid, adopted.port, adopted.gpus) == (
        "kept",
        kept["pid"],
        kept["port"],
        (0,),
    )
    assert adopted.state is instance.State.READY
    assert adopted.adopted
    assert successor.inventory.holders() == {"kept": (0,)}
    await successor.stop("kept")
    assert not fx.alive(kept["pid"])
    assert not fx.alive(kept["child"])


async def test_an_adopted_instance_that_crashes_is_restarted_by_the_new_agent(
    state_dir: pathlib.Path, successor: instances.Supervisor, left: list[int]
) -> None:
    shown = (await _dead_agent(state_dir, "kept"))["kept"]
    left += [shown["pid"], shown["child"]]
    assert await successor.open() == {"kept": "adopted"}
    os.kill(shown["pid"], signal.SIGKILL)
    await fx.eventually(lambda: successor.list()[0].restarts == 1, "a restart")
    again = await fx.ready(successor, "kept")
    assert again.pid != shown["pid"]
    assert again.port == shown["port"]
    assert not again.adopted
    assert not fx.alive(shown["child"]), "the crashed instance's group is gone"


async def test_a_restarted_agent_kills_the_orphans_of_an_instance_whose_server_died(
    state_dir: pathlib.Path, successor: instances.Supervisor, left: list[int]
) -> None:
    shown = (await _dead_agent(state_dir, "orphaned"))["orphaned"]
    left += [shown["pid"], shown["child"]]
    os.kill(shown["pid"], signal.SIGKILL)
    await fx.eventually(lambda: not fx.alive(shown["pid"]), "the server to die")
    assert fx.alive(shown["child"])

    assert await successor.open() == {"orphaned": "stopped"}

    assert not fx.alive(shown["child"])
    assert successor.list() == []
    assert successor.inventory.holders() == {}


async def test_a_restarted_agent_with_fewer_gpus_stops_the_instance_on_a_gpu_it_lacks(
    state_dir: pathlib.Path, left: list[int]
) -> None:
    shown = await _dead_agent(state_dir, "first", "second")
    left += [pid for item in shown.values() for pid in (item["pid"], item["child"])]
    inventory = gpus.Inventory(gpus.parse("1x80GiB"))
    async with instances.Supervisor(state_dir, inventory, fx.settings()) as successor:
        assert [s.name for s in successor.list()] == ["first"]
        assert not fx.alive(shown["second"]["pid"])
        assert not fx.alive(shown["second"]["child"])
        assert successor.inventory.holders() == {"first": (0,)}
    assert not fx.alive(shown["first"]["pid"]), "leaving the block closes the supervisor"


async def test_a_restarted_agent_advertises_an_adopted_instance_under_its_own_advertised_host(
    state_dir: pathlib.Path, left: list[int]
) -> None:
    shown = (await _dead_agent(state_dir, "kept"))["kept"]
    left += [shown["pid"], shown["child"]]
    settings = fx.settings(advertise_host="10.1.2.3")
    inventory = gpus.Inventory(gpus.parse("2x80GiB"))
    async with instances.Supervisor(state_dir, inventory, settings) as successor:
        [adopted] = successor.list()  # entering the block opens it

    assert adopted.adopted
    assert adopted.base_url == f"http://10.1.2.3:{shown['port']}/v1"


async def test_a_restarted_agent_on_another_instance_host_stops_what_listens_on_the_old_one(
    state_dir: pathlib.Path, left: list[int]
) -> None:
    shown = (await _dead_agent(state_dir, "kept"))["kept"]
    left += [shown["pid"], shown["child"]]
    inventory = gpus.Inventory(gpus.parse("2x80GiB"))
    moved = fx.settings(host="0.0.0.0", advertise_host="gpu-7.example.test")
    async with instances.Supervisor(state_dir, inventory, moved) as successor:
        assert successor.list() == []
        assert successor.inventory.holders() == {}

    assert not fx.alive(shown["pid"])
    assert not fx.alive(shown["child"])
