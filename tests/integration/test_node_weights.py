"""The node agent's weights cache pulling from the emulated Hugging Face Hub, in process.

The real huggingface_hub client runs in `Cache.pull`'s worker thread against `hfhub.running`
in the test's event loop. Files over 10 MiB are needed for progress and resume: the 2.4 client
writes per 10 MiB chunk (PROTOCOLS §A.x).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
from collections.abc import AsyncIterator

import pytest

from emulators import hfhub
from nodeagent import progress, weights

MIB = 1024 * 1024
REPOS = [
    hfhub.RepoSpec("org/model", {"config.json": b"{}", "model.safetensors": 24 * MIB}),
    hfhub.RepoSpec(
        "org/split", {"a.safetensors": 11 * MIB, "b.safetensors": 11 * MIB, "config.json": b"{}"}
    ),
    hfhub.RepoSpec("org/gated", {"model.safetensors": 100}, gated=True, tokens=frozenset({"t0k"})),
]
MODEL_TOTAL = 24 * MIB + 2


@pytest.fixture
async def hub() -> AsyncIterator[hfhub.Emulator]:
    async with hfhub.running(repos=REPOS) as emu:
        yield emu


def _cache(hub: hfhub.Emulator, root: pathlib.Path, **kwargs: object) -> weights.Cache:
    return weights.Cache(root, endpoint=hub.url, **kwargs)  # type: ignore[arg-type]


def _blobs(root: pathlib.Path) -> list[pathlib.Path]:
    return list(root.rglob("blobs/*"))


def _resolve_gets(hub: hfhub.Emulator) -> list[str]:
    return [key for key in hub.nodes[0].requests if key.startswith("GET /org/")]


async def test_pull_reports_byte_progress_monotonically_up_to_the_total(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    seen: list[progress.Progress] = []

    pulled = await _cache(hub, tmp_path).pull("org/model", on_progress=seen.append)

    completed = [p.completed for p in seen]
    assert {p.total for p in seen} == {MODEL_TOTAL}
    assert completed == sorted(completed)
    assert len(set(completed)) == len(completed)
    assert completed[0] == 0
    assert completed[-1] == MODEL_TOTAL
    assert any(0 < c < MODEL_TOTAL for c in completed)  # reported during, not only at the end
    assert (pulled.path / "model.safetensors").stat().st_size == 24 * MIB
    assert pulled.size == MODEL_TOTAL


async def test_a_cut_mid_file_is_resumed_and_only_the_missing_bytes_are_sent_again(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    node = hub.nodes[0]
    node.download_faults.append(hfhub.DownloadFault("model.safetensors", after_bytes=15 * MIB))
    seen: list[progress.Progress] = []

    pulled = await _cache(hub, tmp_path).pull("org/model", on_progress=seen.append)

    gets = [(d.start, d.sent) for d in node.downloads if d.path == "model.safetensors"]
    assert gets == [(0, 15 * MIB), (10 * MIB, 14 * MIB)]  # resumed from the last whole chunk
    expected = node.repos["org/model"].resolve("main")
    assert expected is not None
    data = (pulled.path / "model.safetensors").read_bytes()
    assert data == expected.files["model.safetensors"].content()
    assert [p.completed for p in seen] == sorted(p.completed for p in seen)


async def test_a_5xx_is_transient_and_the_retry_fetches_only_the_unfinished_file(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    node = hub.nodes[0]
    node.download_faults.append(hfhub.DownloadFault("b.safetensors", status=503))
    cache = _cache(hub, tmp_path, max_workers=1)

    with pytest.raises(weights.WeightsError) as failed:
        await cache.pull("org/split")
    node.downloads.clear()
    seen: list[progress.Progress] = []
    await cache.pull("org/split", on_progress=seen.append)

    assert failed.value.kind is weights.ErrorKind.TRANSIENT
    assert "503" in str(failed.value)
    assert [(d.path, d.start, d.sent) for d in node.downloads] == [("b.safetensors", 0, 11 * MIB)]
    assert seen[0].completed == 11 * MIB + 2  # a.safetensors and config.json were cached


async def test_a_model_larger_than_free_disk_is_refused_before_any_byte(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    cache = _cache(hub, tmp_path, disk_usage=lambda _: weights.DiskUsage(10**12, 0, 1000))

    with pytest.raises(weights.WeightsError) as refused:
        await cache.pull("org/model")

    assert refused.value.kind is weights.ErrorKind.INSUFFICIENT_DISK
    assert (refused.value.needed, refused.value.free) == (MODEL_TOTAL, 1000)
    assert f"needs {MODEL_TOTAL} more bytes" in str(refused.value)
    assert _resolve_gets(hub) == []
    assert _blobs(tmp_path) == []


async def test_the_disk_check_counts_only_what_is_not_cached_yet(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    await _cache(hub, tmp_path).pull("org/split")
    hub.nodes[0].repos["org/split"].publish({"b.safetensors": 5 * MIB})
    tight = _cache(hub, tmp_path, disk_usage=lambda _: weights.DiskUsage(0, 0, 5 * MIB - 1))
    roomy = _cache(hub, tmp_path, disk_usage=lambda _: weights.DiskUsage(0, 0, 5 * MIB))

    with pytest.raises(weights.WeightsError) as refused:
        await tight.pull("org/split")
    pulled = await roomy.pull("org/split")

    assert refused.value.needed == 5 * MIB
    assert len(pulled.commits) == 2
    assert pulled.commit == pulled.refs["main"]


async def test_a_gated_repo_fails_permanently_with_the_hubs_reason_until_a_token_is_given(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(weights.WeightsError) as refused:
        await _cache(hub, tmp_path).pull("org/gated")
    pulled = await _cache(hub, tmp_path, token="t0k").pull("org/gated")

    assert refused.value.kind is weights.ErrorKind.PERMANENT
    assert "org/gated@main is gated: Access to model org/gated is restricted" in str(refused.value)
    assert "t0k" not in repr(_cache(hub, tmp_path, token="t0k"))
    assert (pulled.path / "model.safetensors").stat().st_size == 100


@pytest.mark.parametrize(("source", "revision"), [("org/absent", None), ("org/model", "nope")])
async def test_a_missing_repo_or_revision_fails_permanently_with_the_hubs_reason(
    hub: hfhub.Emulator, tmp_path: pathlib.Path, source: str, revision: str | None
) -> None:
    with pytest.raises(weights.WeightsError) as refused:
        await _cache(hub, tmp_path).pull(source, revision)

    assert refused.value.kind is weights.ErrorKind.PERMANENT
    assert ("Repository not found" if revision is None else "Invalid rev id: nope") in str(
        refused.value
    )


async def test_an_unreachable_hub_is_transient(tmp_path: pathlib.Path) -> None:
    async with hfhub.running() as emu:
        url = emu.url  # the port is closed once the block ends
    cache = weights.Cache(tmp_path, endpoint=url)

    with pytest.raises(weights.WeightsError) as failed:
        await cache.pull("org/model")

    assert failed.value.kind is weights.ErrorKind.TRANSIENT


async def test_a_pinned_sha_and_a_branch_are_both_kept_with_their_refs(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    repo = hub.nodes[0].repos["org/model"]
    first = repo.branches["main"]
    second = repo.publish({"config.json": b'{"v": 2}'})
    cache = _cache(hub, tmp_path)

    new = await cache.pull("org/model")
    old = await cache.pull("org/model", first)

    assert old.path.name == first
    assert old.commit == first
    assert (old.path / "config.json").read_bytes() == b"{}"
    assert new.commit == second
    assert new.refs == {"main": second}
    assert old.commits == tuple(sorted((first, second)))
    assert hub.nodes[0].bytes_sent("model.safetensors") == 24 * MIB  # one shared blob


_PULL_IN_A_FRESH_PROCESS = """
import asyncio, pathlib, sys
from nodeagent import weights
pulled = asyncio.run(weights.Cache(pathlib.Path(sys.argv[1])).pull("org/gated"))
print(pulled.commit, pulled.size)
"""


async def test_hf_endpoint_and_hf_token_from_the_environment_are_honoured(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    # huggingface_hub reads HF_ENDPOINT at import, so a fresh process shows the real contract
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "t0k", "HF_HOME": str(tmp_path)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PULL_IN_A_FRESH_PROCESS,
        str(tmp_path / "cache"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)

    assert child.returncode == 0, err.decode()
    assert out.decode().split() == [hub.nodes[0].repos["org/gated"].branches["main"], "100"]
    assert "t0k" not in (out + err).decode()
