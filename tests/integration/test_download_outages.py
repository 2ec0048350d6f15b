"""Downloads through outages. A Postgres outage longer than the lease: the replica keeps the
jobs it is still running (every one succeeds on its first attempt), and its download cycle
resumes at the first tick after the database returns, not at the end of a backoff grown to its
cap. A NATS outage while a pull ends: its end is published once NATS is back, live and in the
replay. Real Postgres and NATS stopped or killed and started, emulated Ollama nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import nats
import pytest
import sqlalchemy as sa
import structlog

import migrations
from controller import metrics, scheduled
from dwqueue import events, flushing, jobs, publisher, subscriber
from emulators import ollama
from runtimestate import clock
from tests import services
from tests.integration.downloads_fixtures import FAST, World

pytestmark = pytest.mark.timeout(120)
S = jobs.JobState
LEASE = dt.timedelta(seconds=1)
SHORT_LEASE = dataclasses.replace(
    FAST, downloads=dataclasses.replace(FAST.downloads, lease=LEASE, heartbeat_s=0.2)
)


async def _eventually(check: Callable[[], bool], what: str, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.05)


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


async def _retrying_ends(logged: list[dict[str, Any]], jobs_: list[jobs.Job], times: int) -> None:
    """Wait until the end of each of ``jobs_`` met the outage ``times`` times (and waits, on the
    worker's clock, to be retried)."""

    def met() -> bool:
        retries = [e.get("job_id") for e in logged if e["event"] == _RETRYING]
        return all(retries.count(j.id) >= times for j in jobs_)

    await _eventually(met, f"the pulls' ends to meet the outage {times} times")


_RETRYING = "database unavailable; retrying"


async def test_a_postgres_outage_longer_than_the_lease_costs_no_pull_a_second_attempt(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    fake = clock.FakeClock()  # the outage outlasts the lease on the worker's clock
    world = World(url, SHORT_LEASE, clock=fake)
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
                while (found := await world.job(job.id)).progress.completed in (None, 0):
                    assert time.monotonic() < deadline, "no progress"
                    await asyncio.sleep(0.05)
                assert found.lease_expires_at == fake.now() + LEASE  # the worker's clock
            with structlog.testing.capture_logs() as logged:
                fresh_postgres_server.stop()
                _finish_pulls(emu, 0)  # two pulls end during the outage: their end waits for
                _finish_pulls(emu, 1)  # the database; the third is still pulling when it returns
                await _retrying_ends(logged, queued[:2], times=1)
                fake.advance(2.5 * LEASE.total_seconds())  # every lease has expired
                await _retrying_ends(logged, queued[:2], times=2)  # down still: they wait
                fresh_postgres_server.start()
                await _reap_after_restart(world)  # before the ends are retried
                fake.advance(2.0)  # the longest retry delay: the two ends are written
            _finish_pulls(emu, 2)
            done = [await world.until(j.id, S.SUCCEEDED, S.FAILED, within_s=30) for j in queued]
            pulls = [sum(node.pulls.values()) for node in emu.nodes]
    finally:
        await world.close()
    assert [(job.state, job.attempts) for job in done] == [(S.SUCCEEDED, 1)] * 3, done
    assert pulls == [1, 1, 1]  # no pull started twice


async def test_a_pull_stopped_in_an_outage_is_left_to_its_lease_once_the_lease_has_passed(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    fake = clock.FakeClock()  # a lease of a minute, passed without waiting a minute
    lease = dt.timedelta(minutes=1)
    world = World(url, dataclasses.replace(FAST, downloads=dataclasses.replace(
        FAST.downloads, lease=lease)), clock=fake)  # fmt: skip
    try:
        async with ollama.running(pull_rate=20_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            await world.state.run_download_cycle()
            await _eventually(lambda: bool(world.state.downloads.running), "the pull to start")
            with structlog.testing.capture_logs() as logged:
                fresh_postgres_server.stop()
                stopping = asyncio.create_task(world.state.downloads.stop())
                await _retrying_ends(logged, [job], times=1)  # the release meets the outage
                fake.advance(lease.total_seconds() - 1)
                await _retrying_ends(logged, [job], times=2)  # within the lease: it retries
                assert not stopping.done()
                fake.advance(2)
                await asyncio.wait_for(stopping, 10)
            fresh_postgres_server.start()
            await _reap_after_restart(world)
            reaped = await world.job(job.id)
    finally:
        await world.close()
    left = [e for e in logged if e["event"] == "database unavailable; left to the lease"]
    assert [e["job_id"] for e in left] == [job.id]
    assert (reaped.state, reaped.error_class) == (S.QUEUED, jobs.ErrorClass.LEASE_EXPIRED)


async def test_the_download_cycle_resumes_at_the_first_tick_after_a_long_database_outage(
    fresh_postgres_server: services.PostgresServer,
) -> None:
    url = fresh_postgres_server.url
    migrations.upgrade(url)
    world = World(url)
    clock = [0.0]
    worker = scheduled.Work(world.state, world.engine, metrics.Metrics(), clock=lambda: clock[0])
    try:
        async with ollama.running() as emu:
            await world.declare("gpu-1", emu.url)
            fresh_postgres_server.stop()
            with structlog.testing.capture_logs() as logged:
                for _ in range(8):  # a long outage: the backoff grows to its cap
                    await worker.download_cycle()
                    clock[0] += scheduled.FAILURE_BACKOFF.cap_s + 1
                await worker.download_cycle()  # ran: the ninth failure, 30 s of backoff
                clock[0] += 1
                await worker.download_cycle()  # skipped: the probe finds the database down
            failures = [e for e in logged if e["event"] == "work failed; retrying later"]
            assert [e["failures"] for e in failures] == list(range(1, 10))
            assert failures[-1]["retry_in_s"] == scheduled.FAILURE_BACKOFF.cap_s
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


async def test_a_pull_that_ends_while_nats_is_down_ends_live_and_in_the_replay_once_it_is_back(
    postgres_url: str, fresh_nats_server: services.NatsServer, nats_prefix: str
) -> None:
    migrations.upgrade(postgres_url)
    url = fresh_nats_server.url
    sink = publisher.Publisher(url, prefix=nats_prefix, reconnect_wait_s=0.5)
    await sink.start()
    await _eventually(lambda: sink.jetstream is True, "the publisher to declare its stream")
    # A plain `nats sub` that stays up through the outage: it reconnects sooner than the
    # publisher, so it is subscribed again when the kept events go out.
    listener = await nats.connect(url, reconnect_time_wait=0.05, max_reconnect_attempts=-1)
    heard: list[events.DownloadEvent] = []

    async def on_message(msg: Any) -> None:
        heard.append(events.from_wire(msg.data))

    await listener.subscribe(events.filter_subject(nats_prefix), cb=on_message)
    await flushing.flush(listener, 10)
    world = World(postgres_url, sink=sink)
    try:
        async with ollama.running(pull_rate=50_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            await world.until(job.id, S.RUNNING)
            await _eventually(lambda: any(e.TYPE == "progress" for e in heard), "progress")
            fresh_nats_server.kill()
            await _eventually(lambda: not sink.connected, "the publisher to see NATS gone")
            _finish_pulls(emu, 0)
            done = await world.until(job.id, S.SUCCEEDED, S.FAILED)
            assert done.state is S.SUCCEEDED, done.error
            assert heard[-1].TYPE == "progress"  # the end happened while NATS was away
            await asyncio.to_thread(fresh_nats_server.start)
            await _eventually(lambda: heard[-1].TYPE == "succeeded", "the end, live")
            watcher = await nats.connect(url)
            try:
                async with subscriber.Watch(watcher, prefix=nats_prefix) as watch:
                    assert watch.replaying
                    replayed = await watch.next(15)
            finally:
                await watcher.close()
    finally:
        await world.close()
        await listener.close()
        await sink.close()
    assert (heard[-1].job_id, heard[-1].seq) == (job.id, done.seq)
    assert (replayed.TYPE, replayed.job_id, replayed.seq) == ("succeeded", job.id, done.seq)
    assert sink.stats.republished >= 1
    assert sink.unsent == 0
