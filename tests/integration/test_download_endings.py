"""How a pull ends, against emulated Ollama nodes and a real database: every job gets exactly one
terminal event however its heartbeats race its end, a cancel is logged as a cancel and closes the
pull's stream, a cancel request is checked against the database, and a pull stopped here never
leaves its job running."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

import migrations
from dwqueue import backoff, events, jobs, queue
from emulators import ollama
from runtimestate import downloads, state
from tests.integration.downloads_fixtures import World

pytestmark = pytest.mark.timeout(120)
S = jobs.JobState
MODELS = [
    "qwen2:0.5b", "qwen2.5:0.5b", "qwen3:0.6b", "llama3.2:1b", "llama3.2:latest",
    "tinyllama:latest", "smollm2:135m", "nomic-embed-text:latest",
]  # fmt: skip


class SlowSink:
    """Keeps what it is given, after a few milliseconds: a publish that takes a round trip."""

    def __init__(self, delay_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.published: list[events.DownloadEvent] = []

    async def publish(self, event: events.DownloadEvent) -> bool:
        await asyncio.sleep(self.delay_s)
        self.published.append(event)
        return True


def settings(*, heartbeat_s: float, lease_s: float = 10.0, concurrency: int = 8) -> state.Settings:
    return state.Settings(
        downloads=downloads.Settings(
            concurrency=concurrency,
            lease=dt.timedelta(seconds=lease_s),
            heartbeat_s=heartbeat_s,
            retry=backoff.Policy(base_s=0.05, cap_s=0.2, max_attempts=3),
        )
    )


def outcomes(logged: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The canonical ``download`` log line's outcome(s), by job id."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for entry in logged:
        if entry.get("event") == "download":
            found[entry["job_id"]].append(entry["outcome"])
    return dict(found)


@pytest.fixture
async def sink_world(database_url: str) -> AsyncIterator[tuple[World, SlowSink]]:
    migrations.upgrade(database_url)
    sink = SlowSink()
    world = World(database_url, settings(heartbeat_s=0.003), sink=sink)
    try:
        yield world, sink
    finally:
        await world.close()


async def test_every_pull_publishes_exactly_one_terminal_event_when_heartbeats_race_its_end(
    sink_world: tuple[World, SlowSink],
) -> None:
    world, sink = sink_world
    nodes = 6
    async with ollama.running(nodes=nodes, pull_rate=None) as emu:
        for i in range(nodes):
            await world.declare(f"gpu-{i}", emu.node_url(i), max_pulls=len(MODELS))
        queued = [await world.enqueue(f"gpu-{i}", m) for i in range(nodes) for m in MODELS]
        with structlog.testing.capture_logs() as logged:
            deadline = time.monotonic() + 60
            while True:
                await world.state.run_download_cycle()
                found = [await world.job(job.id) for job in queued]
                if all(not job.active for job in found):
                    break
                assert time.monotonic() < deadline, [j.state for j in found]
                await asyncio.sleep(0.05)
            await world.state.downloads.drain(10.0)
    assert [job.state for job in found] == [S.SUCCEEDED] * len(queued)
    terminal = collections.Counter(e.job_id for e in sink.published if e.TERMINAL)
    assert terminal == {job.id: 1 for job in queued}
    succeeded = {e.job_id for e in sink.published if isinstance(e, events.DownloadSucceeded)}
    assert succeeded == {job.id for job in queued}
    assert outcomes(logged) == {job.id: ["succeeded"] for job in queued}


async def _progressing(world: World, job_id: str) -> jobs.Job:
    deadline = time.monotonic() + 20
    while True:
        await world.state.run_download_cycle()
        job = await world.job(job_id)
        if job.state is S.RUNNING and job.progress.completed:
            return job
        assert time.monotonic() < deadline, f"no progress: {job}"
        await asyncio.sleep(0.05)


async def _gone(world: World, job_id: str, within_s: float) -> float:
    started = time.monotonic()
    while job_id in world.state.downloads.running:
        assert time.monotonic() - started < within_s, f"the pull still runs after {within_s} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_cancel_noticed_by_a_progress_write_is_logged_as_cancelled_and_ends_the_pull(
    migrated_url: str,
) -> None:
    # Heartbeats too rare to matter: the next progress write is what finds the job cancelled.
    world = World(migrated_url, settings(heartbeat_s=30, lease_s=60))
    try:
        async with ollama.running(pull_rate=20_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            with structlog.testing.capture_logs() as logged:
                await _progressing(world, job.id)
                assert emu.nodes[0].downloads, "the emulator is not pulling"
                await world.tx(lambda s: queue.cancel(s, job.id))
                await _gone(world, job.id, within_s=3.0)
                deadline = time.monotonic() + 2
                while emu.nodes[0].downloads:  # the emulator stops once the stream is closed
                    assert time.monotonic() < deadline, "the pull's stream was left open"
                    await asyncio.sleep(0.02)
        assert outcomes(logged) == {job.id: ["cancelled"]}
        done = await world.job(job.id)
        assert (done.state, done.attempts) == (S.CANCELLED, 1)
    finally:
        await world.close()


async def test_a_cancel_request_stops_only_a_pull_the_database_says_is_cancelled(
    migrated_url: str,
) -> None:
    world = World(migrated_url, settings(heartbeat_s=30, lease_s=60))
    try:
        async with ollama.running(pull_rate=20_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            before = await _progressing(world, job.id)
            assert await world.state.downloads.check(job.id) is False  # still ours: a bogus cancel
            await asyncio.sleep(0.3)
            after = await world.job(job.id)
            assert job.id in world.state.downloads.running
            assert (after.state, after.attempts, after.lease_owner) == (
                S.RUNNING, 1, before.lease_owner,
            )  # fmt: skip
            assert after.progress.completed is not None
            assert before.progress.completed is not None
            assert after.progress.completed > before.progress.completed
            assert await world.state.downloads.check("01ARZ3NDEKTSV4RRFFQ69G5FAV") is False

            await world.tx(lambda s: queue.cancel(s, job.id))
            assert await world.state.downloads.check(job.id) is True
            assert await _gone(world, job.id, within_s=1.0) < 0.5  # not the 30 s heartbeat
        assert (await world.job(job.id)).state is S.CANCELLED
    finally:
        await world.close()


async def test_a_pull_stopped_here_while_its_job_is_still_ours_goes_back_to_the_queue(
    migrated_url: str,
) -> None:
    world = World(migrated_url, settings(heartbeat_s=30, lease_s=60))
    try:
        async with ollama.running(pull_rate=20_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            running = await _progressing(world, job.id)
            assert running.attempts == 1
            with structlog.testing.capture_logs() as logged:
                assert world.state.downloads.cancel_local(job.id) is True
                await _gone(world, job.id, within_s=2.0)
            released = await world.job(job.id)
            # Not left running until its lease expires: queued again, the attempt given back,
            # the progress kept.
            assert (released.state, released.attempts, released.lease_owner) == (
                S.QUEUED, 0, None,
            )  # fmt: skip
            assert released.progress.completed
            assert outcomes(logged) == {job.id: ["released"]}
            emu.nodes[0].pull_rate = None
            done = await world.until(job.id, S.SUCCEEDED, S.FAILED)
            assert (done.state, done.attempts) == (S.SUCCEEDED, 1)
    finally:
        await world.close()
