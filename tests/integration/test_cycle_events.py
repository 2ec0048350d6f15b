"""What the backend cycle publishes on a real NATS server: ``<prefix>.v1.state.<backend>`` on a
change only, a removal message when a backend is no longer declared, one summary per cycle."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.msg import Msg

from dwqueue import flushing, publisher
from emulators import ollama
from runtimestate import snapshot
from tests.integration.cycle_fixtures import QUICK, Fleet, fleet_file

pytestmark = pytest.mark.timeout(120)
ARRIVES_S = 15.0  # generous: a passing test never waits it out


@dataclasses.dataclass
class Heard:
    """Messages under ``<prefix>.v1.``, in arrival order: (subject suffix, decoded JSON)."""

    prefix: str
    messages: list[tuple[str, dict[str, object]]] = dataclasses.field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        self.messages.append((msg.subject.removeprefix(f"{self.prefix}.v1."), json.loads(msg.data)))

    def states(self) -> list[tuple[str, dict[str, object]]]:
        return [(s.removeprefix("state."), d) for s, d in self.messages if s.startswith("state.")]

    async def through_cycle(self, number: int) -> None:
        """Wait for cycle ``number``'s summary: the cycle publishes it after its states, on
        one connection, so every state message of that cycle has arrived by then."""
        deadline = time.monotonic() + ARRIVES_S
        while not any(s == "cycles" and d["cycle"] == number for s, d in self.messages):
            assert time.monotonic() < deadline, f"no summary of cycle {number}: {self.messages}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def world(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> AsyncIterator[tuple[Fleet, Heard]]:
    heard = Heard(nats_prefix)
    listener = await nats.connect(nats_url)
    await listener.subscribe(f"{nats_prefix}.v1.>", cb=heard.on_message)
    await flushing.flush(listener, 10)  # the server has the SUB
    sink = publisher.Publisher(nats_url, prefix=nats_prefix, reconnect_wait_s=0.2)
    await sink.start()
    deadline = time.monotonic() + ARRIVES_S
    while sink.jetstream is None:
        assert time.monotonic() < deadline, "the publisher never connected"
        await asyncio.sleep(0.02)
    settings = dataclasses.replace(
        QUICK, cycle=dataclasses.replace(QUICK.cycle, prefix=nats_prefix)
    )
    fleet = Fleet(migrated_url, settings, sink=sink)
    try:
        yield fleet, heard
    finally:
        await fleet.close()
        await sink.close()
        await listener.drain()


async def test_state_is_published_on_a_real_change_and_not_when_nothing_changed(
    world: tuple[Fleet, Heard],
) -> None:
    fleet, heard = world
    async with ollama.running(nodes=2, installed=["qwen2:0.5b"]) as emu:
        backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(2)}
        await fleet.apply(fleet_file(backends, ["qwen2:0.5b"]))
        await fleet.state.run_backend_cycle()
        await heard.through_cycle(1)
        first = heard.states()
        assert sorted(name for name, _ in first) == ["gpu-0", "gpu-1"]
        decoded = snapshot.state_from_dict(first[0][1])
        assert decoded.phase is snapshot.Phase.READY
        assert {m.name for m in decoded.pulled_models} == {"qwen2:0.5b"}

        heard.messages.clear()
        await fleet.state.run_backend_cycle()  # steady: only last_ok_at moved
        await heard.through_cycle(2)
        assert heard.states() == []

        heard.messages.clear()
        emu.nodes[1].install_names(["nomic-embed-text"])
        await fleet.state.run_backend_cycle()
        await heard.through_cycle(3)
        ((name, doc),) = heard.states()
        assert name == "gpu-1"
        models = {m.name for m in snapshot.state_from_dict(doc).pulled_models}
        assert models == {"qwen2:0.5b", "nomic-embed-text:latest"}


async def test_a_backend_no_longer_declared_is_published_as_removed(
    world: tuple[Fleet, Heard],
) -> None:
    fleet, heard = world
    async with ollama.running(nodes=2, installed=["qwen2:0.5b"]) as emu:
        backends = {f"gpu-{i}": ("ollama", emu.node_url(i), "managed") for i in range(2)}
        await fleet.apply(fleet_file(backends, ["qwen2:0.5b"]))
        await fleet.state.run_backend_cycle()
        await heard.through_cycle(1)
        heard.messages.clear()
        kept = {"gpu-0": backends["gpu-0"]}
        await fleet.apply(fleet_file(kept, ["qwen2:0.5b"]), prune=True)
        await fleet.state.run_backend_cycle()
        await heard.through_cycle(2)
    assert heard.states() == [("gpu-1", {"name": "gpu-1", "removed": True})]
    assert "gpu-1" not in fleet.state.get().backends
