"""Downloads through a Postgres outage longer than the lease: the replica keeps the jobs it is
still running (every one succeeds on its first attempt), and its download cycle resumes at the
first tick after the database returns, not at the end of a backoff grown to its cap. Real
Postgres stopped and started, emulated Ollama nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time

import pytest
import sqlalchemy as sa
import structlog

import migrations
from controller import metrics, work
from dwqueue import jobs
from emulators import ollama
from tests import services
from tests.integration.downloads_fixtures import FAST, World

pytestmark = pytest.mark.timeout(120)
S = jobs.JobState
LEASE = dt.timedelta(seconds=1)
SHORT_LEASE = dataclasses.replace(
    FAST, downloads=dataclasses.replace(FAST.downloads, lease=LEASE, heartbeat_s=0.2)
)


def _finish_pulls(emu: ollama.Emulator, node: int) -> None:
    """The rest of the node's downloads arrives at once."""
    emu.nodes[node].pull_rate = None
    for transfer in emu.nodes[node].downloads.values():
        transfer.rate = None


async def _reap_after_restart(world: World) -> None:
    """What the reaper (or the download cycle's own reap) does at its first tick after the
    restart; a pooled connection that died with the server may fail the first try."""
    for _ in range(5):
        try:
            await world.state.downloads.reap()
            return
        except sa.exc.OperationalError:
            await asyncio.sleep(0.1)
    await world.state.downloads.reap()


async def test_a_postgres_outage_longer_than_the_lease_costs_no_pull_a_second_attempt(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    world = World(url, SHORT_LEASE)
    models = ["qwen2:0.5b", "smollm2:135m", "tinyllama"]
    try:
        async with ollama.running(nodes=3, pull_rate=20_000_000) as emu:  # 14 s and more
            queued = []
            for i, model in enumerate(models):
                await world.declare(f"gpu-{i}", emu.node_url(i))
                queued.append(await world.enqueue(f"gpu-{i}", model))
            await world.state.run_download_cycle()
            deadline = time.monotonic() + 20
            for job in queued:
                while (await world.job(job.id)).progress.completed in (None, 0):
                    assert time.monotonic() < deadline, "no progress"
                    await asyncio.sleep(0.05)
            fresh_postgres_server.stop()
            _finish_pulls(emu, 0)  # two pulls end during the outage: their end waits for
            _finish_pulls(emu, 1)  # the database; the third is still pulling when it returns
            await asyncio.sleep(2.5 * LEASE.total_seconds())
            fresh_postgres_server.start()
            await _reap_after_restart(world)
            _finish_pulls(emu, 2)
            done = [await world.until(j.id, S.SUCCEEDED, S.FAILED, within_s=30) for j in queued]
            pulls = [sum(node.pulls.values()) for node in emu.nodes]
    finally:
        await world.close()
    assert [(job.state, job.attempts) for job in done] == [(S.SUCCEEDED, 1)] * 3, done
    assert pulls == [1, 1, 1]  # no pull started twice


async def test_the_download_cycle_resumes_at_the_first_tick_after_a_long_database_outage(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    world = World(url)
    clock = [0.0]
    worker = work.Work(world.state, world.engine, metrics.Metrics(), clock=lambda: clock[0])
    try:
        async with ollama.running() as emu:
            await world.declare("gpu-1", emu.url)
            fresh_postgres_server.stop()
            with structlog.testing.capture_logs() as logged:
                for _ in range(8):  # a long outage: the backoff grows to its cap
                    await worker.download_cycle()
                    clock[0] += work.FAILURE_BACKOFF.cap_s + 1
                await worker.download_cycle()  # ran: the ninth failure, 30 s of backoff
                clock[0] += 1
                await worker.download_cycle()  # skipped: the probe finds the database down
            failures = [e for e in logged if e["event"] == "work failed; retrying later"]
            assert [e["failures"] for e in failures] == list(range(1, 10))
            assert failures[-1]["retry_in_s"] == work.FAILURE_BACKOFF.cap_s
            fresh_postgres_server.start()
            job = await world.enqueue("gpu-1", "all-minilm")
            clock[0] += 1  # the next tick of the scheduler, 29 s before the backoff ends
            await worker.download_cycle()
            claimed = await world.job(job.id)
    finally:
        await world.close()
    assert (claimed.state, claimed.lease_owner) in {
        (S.RUNNING, world.state.owner),
        (S.SUCCEEDED, None),
    }, claimed
    assert claimed.attempts == 1
