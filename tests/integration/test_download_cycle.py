"""run_download_cycle against emulated Ollama nodes, a real database and real NATS."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest

from dwqueue import backoff, jobs, publisher, queue, rows
from emulators import faults, ollama
from runtimestate import state
from runtimestate.reconcile import status
from tests.integration.downloads_fixtures import FAST, Recorder, World, record

pytestmark = pytest.mark.timeout(90)
S = jobs.JobState


def _settings(policy: backoff.Policy) -> state.Settings:
    return dataclasses.replace(FAST, downloads=dataclasses.replace(FAST.downloads, retry=policy))


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # SQLite drops the zone


@pytest.fixture
async def world(migrated_url: str) -> AsyncIterator[World]:
    world = World(migrated_url)
    try:
        yield world
    finally:
        await world.close()


async def test_a_queued_pull_runs_to_success_and_is_recorded_as_managed(world: World) -> None:
    async with ollama.running(installed=["qwen2:0.5b"], pull_rate=2_000_000_000) as emu:
        await world.declare("gpu-1", emu.url)
        job = await world.enqueue("gpu-1", "llama3.2:1b")
        done = await world.until(job.id, S.SUCCEEDED, S.FAILED)
        assert done.state is S.SUCCEEDED, done.error
        assert done.progress.total is not None
        assert done.progress.completed == done.progress.total
        assert "llama3.2:1b" in {m.spec.name for m in emu.nodes[0].installed.values()}
        managed = await world.tx(status.managed)
        assert ("gpu-1", "llama3.2:1b") in managed


async def test_an_unknown_model_fails_as_permanent_after_one_attempt(world: World) -> None:
    async with ollama.running() as emu:
        await world.declare("gpu-1", emu.url)
        job = await world.enqueue("gpu-1", "no-such-model:7b")
        done = await world.until(job.id, S.FAILED, S.SUCCEEDED)
        assert done.state is S.FAILED
        assert done.error_class is jobs.ErrorClass.PERMANENT
        assert done.attempts == 1
        assert done.error is not None
        assert "model_not_found" in done.error
        await world.state.run_download_cycle()
        assert (await world.job(job.id)).state is S.FAILED


async def test_a_connection_reset_mid_pull_is_retried_with_backoff_and_succeeds(
    migrated_url: str,
) -> None:
    # No jitter: the retry is due exactly base_s after the failure, so the wait is visible.
    policy = backoff.Policy(base_s=0.4, cap_s=2.0, max_attempts=3, jitter=backoff.Jitter.NONE)
    world = World(migrated_url, _settings(policy))
    try:
        async with ollama.running(pull_rate=500_000_000, tick_interval=0.01) as emu:
            emu.set_fault(faults.Fault(faults.FaultKind.RESET, after_lines=3, times=1), "/api/pull")
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            await world.until(job.id, S.RUNNING)
            retrying = await world.until(job.id, S.QUEUED)
            assert retrying.attempts == 1
            assert retrying.error_class is jobs.ErrorClass.TRANSIENT
            assert retrying.error is not None
            assert "unavailable" in retrying.error
            wait = retrying.next_attempt_at - retrying.updated_at  # updated when it failed
            assert wait == dt.timedelta(seconds=policy.base_s)
            assert retrying.next_attempt_at > rows.utcnow() - dt.timedelta(seconds=0.1)
            await world.state.run_download_cycle()  # not due yet: nothing is claimed
            assert (await world.job(job.id)).state is S.QUEUED
            assert emu.nodes[0].requests["POST /api/pull"] == 1
            done = await world.until(job.id, S.SUCCEEDED, S.FAILED)
            assert done.state is S.SUCCEEDED, done.error
            assert done.attempts == 2  # the reset attempt, then the retry that finished
            assert done.started_at is not None
            assert _aware(done.started_at) >= _aware(retrying.next_attempt_at)
            assert emu.nodes[0].requests["POST /api/pull"] == 2
    finally:
        await world.close()


async def test_transient_failures_fail_the_download_after_the_configured_attempts(
    world: World,
) -> None:
    # FAST allows 3 attempts; the queue's own default (5) must not win.
    assert FAST.downloads.retry.max_attempts == 3 < queue.DEFAULT_MAX_ATTEMPTS
    async with ollama.running(pull_rate=500_000_000, tick_interval=0.01) as emu:
        emu.set_fault(faults.Fault(faults.FaultKind.RESET, after_lines=2, times=100), "/api/pull")
        await world.declare("gpu-1", emu.url)
        job = await world.enqueue("gpu-1", "qwen2:0.5b")
        assert job.max_attempts == queue.DEFAULT_MAX_ATTEMPTS
        done = await world.until(job.id, S.FAILED, S.SUCCEEDED)
        assert done.state is S.FAILED
        assert (done.attempts, done.max_attempts) == (3, 3)
        assert done.error_class is jobs.ErrorClass.TRANSIENT
        for _ in range(3):  # failed for good: later cycles leave it alone
            await world.state.run_download_cycle()
            await asyncio.sleep(0.1)
        assert (await world.job(job.id)).state is S.FAILED
        assert emu.nodes[0].requests["POST /api/pull"] == 3


async def test_a_full_disk_fails_the_download_as_insufficient_disk(world: World) -> None:
    async with ollama.running(disk_capacity=100_000_000) as emu:
        await world.declare("gpu-1", emu.url)
        job = await world.enqueue("gpu-1", "qwen2:0.5b")
        done = await world.until(job.id, S.FAILED, S.SUCCEEDED)
        assert done.error_class is jobs.ErrorClass.INSUFFICIENT_DISK
        assert done.error is not None
        assert done.error.startswith("insufficient_disk")


async def test_cancel_mid_pull_stops_within_a_second_stays_cancelled_and_retry_revives_it(
    world: World,
) -> None:
    async with ollama.running(pull_rate=20_000_000) as emu:
        await world.declare("gpu-1", emu.url)
        job = await world.enqueue("gpu-1", "qwen2:0.5b")
        running = await world.until(job.id, S.RUNNING)
        assert running.state is S.RUNNING
        await asyncio.sleep(0.5)
        await world.tx(lambda s: queue.cancel(s, job.id))
        cancelled_at = time.monotonic()
        while job.id in world.state.downloads.running:
            assert time.monotonic() - cancelled_at < 1.0, "the pull did not stop within 1 s"
            await asyncio.sleep(0.02)
        for _ in range(3):
            await world.state.run_download_cycle()
            await asyncio.sleep(0.05)
        assert (await world.job(job.id)).state is S.CANCELLED
        emu.nodes[0].pull_rate = None
        await world.tx(lambda s: queue.retry(s, job.id))
        done = await world.until(job.id, S.SUCCEEDED, S.FAILED)
        assert done.state is S.SUCCEEDED, done.error


async def test_events_reach_nats_in_order_with_progress_coalesced(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> None:
    sink = publisher.Publisher(nats_url, prefix=nats_prefix)
    await sink.start()
    world = World(migrated_url, sink=sink)
    recorded = record(nats_url, nats_prefix)
    recorder: Recorder = await recorded.__anext__()
    try:
        async with ollama.running(pull_rate=400_000_000, tick_interval=0.005) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            started = time.monotonic()
            await world.until(job.id, S.SUCCEEDED)
            elapsed = time.monotonic() - started
            await sink.flush()
            await asyncio.sleep(0.2)
        types = recorder.types(job.id)
        assert types[0] == "started"
        assert types[-1] == "succeeded"
        assert types.count("succeeded") == 1
        seqs = [e.seq for e in recorder.of(job.id)]
        assert seqs == sorted(seqs)
        progress = types.count("progress")
        assert progress >= 2
        phases = {e.status for e in recorder.of(job.id)}
        assert "verifying sha256 digest" in phases or "success" in phases
        assert progress <= 5 * elapsed + len(phases) + 2
    finally:
        await recorded.aclose()
        await world.close()
        await sink.close()
