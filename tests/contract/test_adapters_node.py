"""The node adapter against a real node agent: ``llmctl node serve`` as an operator starts it.

The agent runs as a process (`node_agent_process`) with a declared GPU (``--gpus 1x24GiB``), the emulated Hugging Face
Hub as its hub and ``llmctl emulate vllm`` as its instance command; the adapter
(`runtimestate.backends.node.NodeBackend`) talks to it over HTTP with the agent's token, as
the controller does. Every method and every refusal the agent can answer is exercised.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from dwqueue import jobs
from emulators import hfhub
from runtimestate import errors
from runtimestate.backends import base, node
from runtimestate.desired import engineargs
from runtimestate.downloads import recorder
from tests.integration import node_agent_process
from tests.integration import node_instances_fixtures as fx

TOKEN = "node-adapter-t0ken-secret"
MIB = 1024 * 1024
REPOS = [
    hfhub.RepoSpec("org/tiny", {"config.json": b"{}", "model.safetensors": 2 * MIB}),
    hfhub.RepoSpec("org/other", {"config.json": b"{}", "model.safetensors": MIB}),
    hfhub.RepoSpec("org/huge", {"model.safetensors": 2**60}),
    hfhub.RepoSpec("org/gated", {"model.safetensors": 1000}, gated=True),
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


async def _pull(adapter: node.NodeBackend, model: str) -> list[base.PullProgress]:
    return [progress async for progress in adapter.pull(model)]


async def _instance(
    adapter: node.NodeBackend, name: str, engine: str | None = None
) -> base.ObservedInstance:
    """Polls the observation until `name` is ready (with the `engine` fingerprint if given)."""
    found: base.ObservedInstance | None = None

    async def ready() -> bool:
        nonlocal found
        observed = await adapter.observe()
        found = next((i for i in observed.instances if i.name == name), None)
        wanted = engine is None or (found is not None and found.engine == engine)
        return found is not None and found.state is base.InstanceState.READY and wanted

    await fx.eventually_async(ready, f"{name} to be ready")
    assert found is not None
    return found


async def test_a_pull_streams_progress_and_the_weights_are_observed_as_a_model(
    adapter: node.NodeBackend,
) -> None:
    before = await adapter.observe()
    steps = await _pull(adapter, "org/tiny")
    observed = await adapter.observe()

    assert before.models == ()
    assert before.instances == ()
    assert steps[-1].status == "success"
    assert steps[-1].digest is not None
    assert steps[-2].completed == steps[-2].total == 2 * MIB + 2
    assert [(m.name, m.model, m.size, m.loaded) for m in observed.models] == [
        ("org/tiny", "org/tiny", 2 * MIB + 2, False)
    ]
    assert observed.models[0].digest == steps[-1].digest
    assert observed.gpus == base.GpuInventory(total=1, free=1)
    assert observed.healthy
    assert observed.version
    assert await adapter.health()


async def test_an_instance_starts_serves_keeps_its_spec_restarts_on_a_new_one_and_stops(
    adapter: node.NodeBackend,
) -> None:
    await _pull(adapter, "org/tiny")
    declared = engineargs.VllmArgs(max_model_len=2048)
    changed = engineargs.VllmArgs(max_model_len=1024)

    await adapter.start_instance("org/tiny", "org/tiny", declared)
    first = await _instance(adapter, "org/tiny")
    async with httpx.AsyncClient(timeout=10) as client:
        models = (await client.get(f"{first.base_url}/models")).json()
    await adapter.start_instance("org/tiny", "org/tiny", declared)  # the same spec: kept
    kept = await _instance(adapter, "org/tiny")
    observed = await adapter.observe()
    await adapter.start_instance("org/tiny", "org/tiny", changed)  # another spec: restarted
    restarted = await _instance(adapter, "org/tiny", engineargs.fingerprint(
        engineargs.agent_body(changed)))  # fmt: skip
    await adapter.stop_instance("org/tiny")
    await adapter.stop_instance("org/tiny")  # absent: success
    after = await adapter.observe()

    assert first.engine == engineargs.fingerprint(engineargs.agent_body(declared))
    assert (first.weights, first.gpus, first.restarts) == ("org/tiny", (0,), 0)
    assert first.base_url.startswith("http://127.0.0.1:")
    assert first.base_url.endswith("/v1")
    assert [card["id"] for card in models["data"]] == ["org/tiny"]
    assert kept.base_url == first.base_url  # the same process, not a second one
    assert observed.models[0].loaded
    assert observed.gpus == base.GpuInventory(total=1, free=0)
    assert restarted.engine != first.engine
    assert after.instances == ()
    assert after.gpus == base.GpuInventory(total=1, free=1)
    assert not after.models[0].loaded


async def test_a_second_instance_on_a_full_node_is_rejected_with_the_gpu_numbers(
    adapter: node.NodeBackend,
) -> None:
    await _pull(adapter, "org/tiny")
    await _pull(adapter, "org/other")
    await adapter.start_instance("org/tiny", "org/tiny", None)

    with pytest.raises(errors.RequestRejected) as refused:
        await adapter.start_instance("org/other", "org/other", None)

    assert "needs 1 GPU, 0 free" in refused.value.detail
    assert refused.value.status_code == 409


async def test_starting_an_instance_of_weights_not_cached_is_model_not_found(
    adapter: node.NodeBackend,
) -> None:
    with pytest.raises(errors.ModelNotFound) as refused:
        await adapter.start_instance("org/tiny", "org/tiny", None)

    assert "pull them first" in refused.value.detail


async def test_delete_refuses_weights_in_use_naming_the_instance_then_deletes_and_is_not_found(
    adapter: node.NodeBackend,
) -> None:
    await _pull(adapter, "org/tiny")
    await adapter.start_instance("org/tiny", "org/tiny", None)

    with pytest.raises(errors.RequestRejected) as in_use:
        await adapter.delete("org/tiny")
    await adapter.stop_instance("org/tiny")
    await adapter.delete("org/tiny")
    with pytest.raises(errors.ModelNotFound):
        await adapter.delete("org/tiny")
    after = await adapter.observe()

    assert "org/tiny" in in_use.value.detail
    assert "in use" in in_use.value.detail
    assert after.models == ()


@pytest.mark.parametrize(
    ("model", "error", "job_class", "words"),
    [
        ("org/huge", errors.InsufficientDisk, jobs.ErrorClass.INSUFFICIENT_DISK, "bytes"),
        ("org/missing", errors.ModelNotFound, jobs.ErrorClass.PERMANENT, "org/missing"),
        ("org/gated", errors.ModelNotFound, jobs.ErrorClass.PERMANENT, "gated"),
        ("bad..name", errors.InvalidModelName, jobs.ErrorClass.PERMANENT, "bad..name"),
    ],
)
async def test_a_refused_pull_raises_the_error_the_download_worker_holds_or_retries(
    adapter: node.NodeBackend,
    model: str,
    error: type[errors.LlmctlError],
    job_class: jobs.ErrorClass,
    words: str,
) -> None:
    with pytest.raises(errors.LlmctlError) as refused:
        await _pull(adapter, model)

    assert type(refused.value) is error
    assert words in refused.value.detail.lower() or words in refused.value.detail
    assert recorder.classify(refused.value)[0] is job_class
    assert TOKEN not in str(refused.value)


async def test_a_pull_the_hub_fails_transiently_is_a_temporary_error(
    hub: hfhub.Emulator, adapter: node.NodeBackend
) -> None:
    fault = {"kind": "http_500", "endpoint": "/api/models/org/tiny/revision/main", "times": 50}
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as admin:
        (await admin.post("/_emulator/faults", json=fault)).raise_for_status()
        try:
            with pytest.raises(errors.TemporaryError) as refused:
                await _pull(adapter, "org/tiny")
        finally:
            (await admin.delete("/_emulator/faults")).raise_for_status()

    assert recorder.classify(refused.value)[0] is jobs.ErrorClass.TRANSIENT


async def test_without_the_token_every_call_is_unauthorized_and_a_wrong_one_is_never_shown(
    agent_url: str,
) -> None:
    wrong = "wrong-t0ken-never-shown"
    async with node.NodeBackend(agent_url, name="gpu-1") as anonymous:
        with pytest.raises(errors.Unauthorized):
            await anonymous.observe()
        with pytest.raises(errors.Unauthorized):
            await _pull(anonymous, "org/tiny")
    async with node.NodeBackend(agent_url, name="gpu-1", api_key=wrong) as mistaken:
        with pytest.raises(errors.Unauthorized) as refused:
            await mistaken.start_instance("org/tiny", "org/tiny", None)

    assert wrong not in str(refused.value)
    assert wrong not in repr(refused.value)


async def test_a_node_url_with_a_trailing_slash_works_and_an_unreachable_agent_is_unavailable(
    agent_url: str,
) -> None:
    async with node.NodeBackend(f"{agent_url}/", api_key=TOKEN) as rooted:
        observed = await rooted.observe()
    async with node.NodeBackend("http://127.0.0.1:9", api_key=TOKEN) as gone:
        with pytest.raises(errors.BackendUnavailable) as refused:
            await gone.observe()

    assert observed.gpus == base.GpuInventory(total=1, free=1)
    assert TOKEN not in str(refused.value)


async def test_the_agent_reports_its_disk_and_sizes_a_pull_with_the_bytes_already_cached(
    adapter: node.NodeBackend,
) -> None:
    before = await adapter.weights_size("org/tiny")
    await _pull(adapter, "org/tiny")
    after = await adapter.weights_size("org/tiny")
    observed = await adapter.observe()

    assert before == base.WeightsSize(bytes=2 * MIB + 2, present=0)
    assert after == base.WeightsSize(bytes=2 * MIB + 2, present=2 * MIB + 2)
    assert observed.disk is not None
    assert 0 < observed.disk.free <= observed.disk.total
    with pytest.raises(errors.ModelNotFound):
        await adapter.weights_size("org/missing")
