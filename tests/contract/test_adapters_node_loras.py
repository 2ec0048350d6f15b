"""The node adapter's LoRA adapters against a real node agent (issue 16).

The agent runs as a process (`node_agent_process`: ``llmctl node serve`` with a declared GPU,
the emulated Hugging Face Hub as its hub, ``llmctl emulate vllm`` as its instance command); the
adapter (`runtimestate.backends.node.NodeBackend`) loads adapters into the instance of their
base model, observes them as served models with that parent, and unloads them.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from emulators import hfhub
from runtimestate import errors
from runtimestate.backends import base, node
from runtimestate.desired import engineargs
from tests.integration import node_agent_process
from tests.integration import node_instances_fixtures as fx

TOKEN = "node-lora-t0ken-secret"
REPOS = [
    hfhub.RepoSpec("org/tiny", {"config.json": b"{}", "model.safetensors": 4096}),
    hfhub.RepoSpec("org/sql-lora", {"adapter_config.json": b"{}", "adapter.safetensors": 512}),
]


@pytest.fixture(scope="module")
def hub() -> Iterator[hfhub.Emulator]:
    with hfhub.in_thread(repos=REPOS) as emu:
        yield emu


@pytest.fixture
def agent_url(hub: hfhub.Emulator, tmp_path: pathlib.Path) -> Iterator[str]:
    with node_agent_process.running(tmp_path / "data", hub.url, TOKEN) as url:
        yield url


@pytest.fixture
async def adapter(agent_url: str) -> AsyncIterator[node.NodeBackend]:
    timeouts = base.Timeouts(total=30.0, stall=30.0)
    async with node.NodeBackend(agent_url, name="gpu-1", api_key=TOKEN, timeouts=timeouts) as b:
        yield b


async def _ready(adapter: node.NodeBackend, lora: bool) -> base.ObservedInstance:
    """Pulls org/tiny, starts its instance (with LoRA or not) and waits until it is ready."""
    async for _ in adapter.pull("org/tiny"):
        pass
    await adapter.start_instance("org/tiny", "org/tiny", engineargs.VllmArgs(enable_lora=lora))
    found: base.ObservedInstance | None = None

    async def ready() -> bool:
        nonlocal found
        found = next(iter((await adapter.observe()).instances), None)
        return found is not None and found.state is base.InstanceState.READY

    await fx.eventually_async(ready, "org/tiny to be ready")
    assert found is not None
    return found


async def test_a_loaded_adapter_is_observed_with_its_base_model_as_parent_then_unloaded(
    adapter: node.NodeBackend,
) -> None:
    instance = await _ready(adapter, lora=True)

    await adapter.load_lora("sql", "org/sql-lora", "org/tiny")
    await adapter.load_lora("sql", "org/sql-lora", "org/tiny")  # loaded already: success
    loaded = await adapter.observe()
    async with httpx.AsyncClient(timeout=10) as client:
        cards = (await client.get(f"{instance.base_url}/models")).json()["data"]
    await adapter.unload_lora("sql")
    unloaded = await adapter.observe()
    with pytest.raises(errors.ModelNotFound):
        await adapter.unload_lora("sql")

    served = {m.name: m for m in loaded.models}
    assert served["sql"].details.parent_model == "org/tiny"
    assert served["sql"].loaded
    assert "org/sql-lora" in served  # the adapter's files, in the agent's cache
    assert loaded.instances[0].adapters == ("sql",)
    assert {c["id"]: c.get("parent") for c in cards}["sql"] == "org/tiny"
    assert "sql" not in {m.name for m in unloaded.models}
    assert unloaded.instances[0].adapters == ()


async def test_loading_into_an_instance_without_lora_is_rejected_naming_the_setting(
    adapter: node.NodeBackend,
) -> None:
    await _ready(adapter, lora=False)

    with pytest.raises(errors.RequestRejected, match="enableLora"):
        await adapter.load_lora("sql", "org/sql-lora", "org/tiny")
    with pytest.raises(errors.ModelNotFound, match="no instance"):
        await adapter.load_lora("sql", "org/sql-lora", "org/absent")
    with pytest.raises(errors.InvalidModelName, match="base model"):
        await adapter.load_lora("sql", "org/sql-lora")
    assert (await adapter.observe()).instances[0].adapters == ()
    assert node.NodeBackend.capabilities.can_load_lora
    assert isinstance(adapter, base.LoraManager)
