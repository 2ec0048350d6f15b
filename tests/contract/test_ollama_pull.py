"""Pull semantics through the official `ollama.AsyncClient`: sharing, cancel and resume, disk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import ollama
import pytest

from emulators import catalog, downloads, names
from emulators import ollama as emulator

_QWEN = catalog.Catalog().get(names.parse("qwen2:0.5b"))
assert _QWEN is not None
QWEN: catalog.ModelSpec = _QWEN
BIG_BLOB = QWEN.blobs[0]


async def _statuses(client: ollama.AsyncClient, model: str) -> list[ollama.ProgressResponse]:
    return [p async for p in await client.pull(model, stream=True)]


async def _drain(
    pulling: Awaitable[AsyncIterator[ollama.ProgressResponse]], seen: list[str]
) -> None:
    """Append every status to `seen` as it arrives, so earlier lines survive an error."""
    async for progress in await pulling:
        seen.append(progress.status or "")


async def test_concurrent_pulls_of_one_model_share_a_single_download() -> None:
    async with (
        emulator.running(pull_rate=1_000_000_000, tick_interval=0.01) as emu,
        ollama.AsyncClient(host=emu.url) as client,
    ):
        first, second = await asyncio.gather(
            _statuses(client, "qwen2:0.5b"), _statuses(client, "qwen2:0.5b")
        )

        node = emu.nodes[0]
        assert first[-1].status == "success"
        assert second[-1].status == "success"
        assert node.pulls["qwen2:0.5b"] == 2
        assert set(node.download_starts.values()) == {1}
        assert len(node.download_starts) == len(QWEN.blobs)
        ticks = [p for p in first if p.digest == BIG_BLOB.digest]
        assert len(ticks) > 3  # the big blob took several ticks, so both pulls overlapped


async def test_progress_ticks_report_growing_completed_bytes_of_the_blob_total() -> None:
    async with (
        emulator.running(pull_rate=1_000_000_000, tick_interval=0.01) as emu,
        ollama.AsyncClient(host=emu.url) as client,
    ):
        lines = await _statuses(client, "qwen2:0.5b")

        ticks = [p for p in lines if p.digest == BIG_BLOB.digest]
        assert ticks[0].status == f"pulling {BIG_BLOB.digest[7:19]}"
        assert {p.total for p in ticks} == {BIG_BLOB.size}
        completed = [p.completed or 0 for p in ticks]
        assert completed == sorted(completed)
        assert completed[-1] == BIG_BLOB.size
        assert 0 < completed[len(completed) // 2] < BIG_BLOB.size


async def test_a_pull_cancelled_by_disconnect_stops_and_a_later_pull_resumes() -> None:
    async with emulator.running(pull_rate=500_000_000, tick_interval=0.01) as emu:
        node = emu.nodes[0]
        async with ollama.AsyncClient(host=emu.url) as client:
            stream = await client.pull("qwen2:0.5b", stream=True)
            async for progress in stream:
                if (progress.completed or 0) > 0:
                    break
            await stream.aclose()  # closes the HTTP response: the only waiter leaves

            for _ in range(100):
                if not node.downloads:
                    break
                await asyncio.sleep(0.01)
            assert node.downloads == {}
            done_at_cancel = node.disk.partial[BIG_BLOB.digest]
            await asyncio.sleep(0.05)
            assert node.disk.partial[BIG_BLOB.digest] == done_at_cancel  # nothing runs any more
            assert 0 < done_at_cancel < BIG_BLOB.size

            node.pull_rate = None  # finish instantly
            lines = await _statuses(client, "qwen2:0.5b")

            first_tick = next(p for p in lines if p.digest == BIG_BLOB.digest)
            assert first_tick.completed == done_at_cancel
            assert lines[-1].status == "success"
            assert node.download_starts[BIG_BLOB.digest] == 2


async def test_a_pull_larger_than_the_disk_fails_mid_stream_with_no_space_left() -> None:
    async with (
        emulator.running(disk_capacity=100_000_000) as emu,
        ollama.AsyncClient(host=emu.url) as client,
    ):
        seen: list[str] = []

        with pytest.raises(ollama.ResponseError) as caught:
            await _drain(client.pull("qwen2:0.5b", stream=True), seen)

        assert seen[0] == "pulling manifest"
        assert len(seen) >= 2
        assert caught.value.status_code == -1
        assert caught.value.error == downloads.no_space_error(BIG_BLOB.digest)
        assert caught.value.error == (
            f"write /root/.ollama/models/blobs/sha256-{BIG_BLOB.digest[7:]}-partial: "
            "no space left on device"
        )
        assert emu.nodes[0].disk.used() == 100_000_000
        assert await client.list() == ollama.ListResponse(models=[])


async def test_a_blob_already_on_disk_gives_one_complete_line() -> None:
    async with (
        emulator.running(installed=["qwen2:0.5b"]) as emu,
        ollama.AsyncClient(host=emu.url) as client,
    ):
        lines = await _statuses(client, "QWEN2:0.5B")

        ticks = [p for p in lines if p.digest == BIG_BLOB.digest]
        assert [(p.completed, p.total) for p in ticks] == [(BIG_BLOB.size, BIG_BLOB.size)]
        assert emu.nodes[0].download_starts == {}
