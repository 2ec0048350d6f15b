"""What the backend cycle publishes on a real NATS server: ``<prefix>.v1.state.<backend>`` on a
change only, a removal message when a backend is no longer declared, one summary per cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from emulators import ollama
from runtimestate import snapshot
from tests.integration.cycle_fixtures import Fleet, Heard, fleet_file, published_fleet

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def world(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> AsyncIterator[tuple[Fleet, Heard]]:
    async with published_fleet(migrated_url, nats_url, nats_prefix) as found:
        yield found


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
