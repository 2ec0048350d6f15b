"""Download events on a real NATS server: publishing, JetStream replay, plain NATS, outages."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from dwqueue import coalescer, events, flushing, jobs, leases, publisher, queue, subscriber
from tests import childprocess, services

AT = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _event(
    cls: type[events.DownloadEvent], job_id: str, seq: int, backend: str = "gpu-1", **kw: object
) -> events.DownloadEvent:
    return cls(job_id=job_id, backend=backend, model="llama3", seq=seq, at=AT, **kw)  # type: ignore[arg-type]


# How long an event that must arrive may take: generous, since a passing test never waits it
# out, and a 2-core CI machine running Postgres servers next to us can stall a process for
# seconds.
ARRIVES_S = 15.0


async def _eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


async def _started_publisher(url: str, prefix: str, **kw: object) -> publisher.Publisher:
    pub = publisher.Publisher(url, prefix=prefix, reconnect_wait_s=0.2, **kw)  # type: ignore[arg-type]
    await pub.start()
    await _eventually(lambda: pub.jetstream is not None)
    return pub


async def test_published_events_arrive_on_the_job_subject(
    nats_url: str, nats_prefix: str, client: Client
) -> None:
    sub = await client.subscribe(f"{nats_prefix}.v1.downloads.>")
    pub = await _started_publisher(nats_url, nats_prefix)
    try:
        job = jobs.new_job_id(AT)
        assert await pub.publish(_event(events.DownloadStarted, job, 2))
        msg = await sub.next_msg(timeout=5)
    finally:
        await pub.close()
    assert msg.subject == f"{nats_prefix}.v1.downloads.gpu-1.{job}"
    assert events.from_wire(msg.data) == _event(events.DownloadStarted, job, 2)
    assert pub.jetstream is True
    assert (pub.stats.published, pub.stats.dropped) == (1, 0)


async def test_the_stream_keeps_only_the_latest_event_of_each_job(
    nats_url: str, nats_prefix: str, client: Client
) -> None:
    pub = await _started_publisher(nats_url, nats_prefix)
    try:
        job = jobs.new_job_id(AT)
        for seq in (1, 2, 3):
            await pub.publish(_event(events.DownloadProgressed, job, seq))
        assert await pub.flush()
    finally:
        await pub.close()
    info = await client.jetstream().stream_info(events.stream_name(nats_prefix))
    assert info.config.max_msgs_per_subject == 1
    assert info.state.messages == 1


async def test_a_late_watch_replays_the_latest_event_per_job_then_follows_live(
    nats_url: str, nats_prefix: str, client: Client
) -> None:
    pub = await _started_publisher(nats_url, nats_prefix)
    a, b = jobs.new_job_id(AT), jobs.new_job_id(AT)
    try:
        for seq, completed in ((2, 10), (3, 20), (4, 30)):
            await pub.publish(_event(events.DownloadProgressed, a, seq, completed=completed))
        await pub.publish(_event(events.DownloadStarted, b, 2, backend="gpu-2"))
        await pub.flush()
        async with subscriber.Watch(client, prefix=nats_prefix) as watch:
            replayed = [await watch.next(ARRIVES_S), await watch.next(ARRIVES_S)]
            await pub.publish(_event(events.DownloadSucceeded, a, 5))
            live = await watch.next(ARRIVES_S)
            assert watch.replaying
    finally:
        await pub.close()
    assert {(e.job_id, e.seq) for e in replayed} == {(a, 4), (b, 2)}
    assert next(e for e in replayed if e.job_id == a).completed == 30
    assert (type(live), live.seq) == (events.DownloadSucceeded, 5)


async def test_a_watch_of_one_backend_sees_only_that_backends_jobs(
    nats_url: str, nats_prefix: str, client: Client
) -> None:
    pub = await _started_publisher(nats_url, nats_prefix)
    try:
        await pub.publish(_event(events.DownloadQueued, jobs.new_job_id(AT), 1, backend="gpu-1"))
        await pub.publish(_event(events.DownloadQueued, jobs.new_job_id(AT), 1, backend="gpu-2"))
        await pub.flush()
        async with subscriber.Watch(client, prefix=nats_prefix, backend="gpu-2") as watch:
            first = await watch.next(ARRIVES_S)
            with pytest.raises(TimeoutError):
                await watch.next(0.3)
    finally:
        await pub.close()
    assert first.backend == "gpu-2"


async def test_events_of_a_real_download_are_published_after_commit_in_sequence(
    nats_url: str, nats_prefix: str, client: Client, session: object
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    pub = await _started_publisher(nats_url, nats_prefix, coalesce=coalescer.Coalescer(4))
    try:
        async with subscriber.Watch(client, prefix=nats_prefix, replay=False) as watch:
            queued = await queue.enqueue(session, "gpu-1", "llama3", now=AT)
            [started] = await leases.claim(session, "w1", now=AT)
            await session.commit()
            for change in (queued, started):
                await pub.publish(change.event)  # type: ignore[arg-type]
            for i in range(10):  # ten lines in 50 ms: the coalescer lets one through
                change = await leases.record_progress(
                    session, started.job.id, "w1", jobs.Progress("pulling x", total=10, completed=i)
                )
                await session.commit()
                assert change is not None
                await pub.publish(change.event)  # type: ignore[arg-type]
                await asyncio.sleep(0.005)
            done = await leases.succeed(session, started.job.id, "w1")
            await session.commit()
            assert done is not None
            await pub.publish(done.event)  # type: ignore[arg-type]
            seen = [await watch.next(ARRIVES_S) for _ in range(4)]
    finally:
        await pub.close()
    assert [e.TYPE for e in seen] == ["queued", "started", "progress", "succeeded"]
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert seen[-1].seq == 13
    assert pub.stats.coalesced == 9


async def test_a_nats_outage_drops_and_counts_events_then_they_flow_again_without_a_restart(
    fresh_nats_server: services.NatsServer, nats_prefix: str
) -> None:
    pub = await _started_publisher(fresh_nats_server.url, nats_prefix)
    job = jobs.new_job_id(AT)
    try:
        assert await pub.publish(_event(events.DownloadStarted, job, 2))
        fresh_nats_server.stop()
        await _eventually(lambda: not pub.connected)
        began = time.monotonic()
        sent = [await pub.publish(_event(events.DownloadProgressed, job, s)) for s in range(3, 13)]
        assert time.monotonic() - began < 0.5  # dropping never slows the download
        assert sent == [False] * 10
        assert pub.stats.dropped == 10
        fresh_nats_server.start()
        await _eventually(lambda: pub.connected)
        await _eventually(lambda: pub.stats.republished == 1)  # the latest kept: seq 12
        nc = await nats.connect(fresh_nats_server.url)
        try:
            sub = await nc.subscribe(f"{nats_prefix}.v1.downloads.>")
            await flushing.flush(nc, 10)  # the server has the SUB
            assert await pub.publish(_event(events.DownloadSucceeded, job, 13))
            msg = await sub.next_msg(timeout=5)
        finally:
            await nc.close()
    finally:
        await pub.close()
    assert events.from_wire(msg.data).seq == 13
    assert pub.stats.dropped == 10
    assert pub.stats.connects == 2


async def test_a_publisher_started_while_nats_is_down_connects_when_it_comes_up(
    fresh_nats_server: services.NatsServer, nats_prefix: str
) -> None:
    fresh_nats_server.stop()
    pub = publisher.Publisher(fresh_nats_server.url, prefix=nats_prefix, reconnect_wait_s=0.2)
    began = time.monotonic()
    await pub.start()
    dropped = await pub.publish(_event(events.DownloadQueued, jobs.new_job_id(AT), 1))
    assert time.monotonic() - began < 0.5
    try:
        assert not dropped
        fresh_nats_server.start()
        await _eventually(lambda: pub.jetstream is True)
        await _eventually(lambda: pub.stats.republished == 1)  # the event kept while down
        assert await pub.publish(_event(events.DownloadQueued, jobs.new_job_id(AT), 1))
    finally:
        await pub.close()
    assert (pub.stats.dropped, pub.stats.republished, pub.stats.published) == (1, 1, 2)


@pytest.fixture
def plain_nats_url(tmp_path: Path) -> Iterator[str]:
    """A NATS server without JetStream, of this test's own."""
    port = childprocess.free_port()
    argv = [str(services.find_nats_server()), "-a", "127.0.0.1", "-p", str(port)]
    proc = childprocess.spawn(argv, cwd=tmp_path, log=tmp_path / "nats.log", run_as=None)
    try:
        childprocess.wait_until(
            lambda: childprocess.port_accepts(port),
            proc=proc,
            what="nats",
            log=tmp_path / "nats.log",
        )
        yield f"nats://127.0.0.1:{port}"
    finally:
        childprocess.terminate(proc, childprocess.signal.SIGTERM)


async def test_on_plain_nats_events_are_published_and_watched_live(
    plain_nats_url: str, nats_prefix: str
) -> None:
    nc = await nats.connect(plain_nats_url)
    pub = await _started_publisher(plain_nats_url, nats_prefix)
    try:
        async with subscriber.Watch(nc, prefix=nats_prefix) as watch:
            assert not watch.replaying
            assert await pub.publish(_event(events.DownloadStarted, jobs.new_job_id(AT), 2))
            assert await pub.flush(ARRIVES_S)  # the server has it: from here on it is delivery
            got = await watch.next(ARRIVES_S)
    finally:
        await pub.close()
        await nc.close()
    assert pub.jetstream is False
    assert got.TYPE == "started"


async def test_a_watch_that_is_open_misses_nothing_published_from_another_connection(
    plain_nats_url: str, nats_prefix: str
) -> None:
    # nats-py's flush can return before the SUB it follows reached the server (its PING skips
    # the queue); once `Watch` is open the server must know it. 100 rounds: a plain flush lost
    # about one first event in fifteen here.
    nc = await nats.connect(plain_nats_url)
    pub = await _started_publisher(plain_nats_url, nats_prefix)
    missed = 0
    try:
        for _ in range(100):
            async with subscriber.Watch(nc, prefix=nats_prefix) as watch:
                job_id = jobs.new_job_id(AT)
                assert await pub.publish(_event(events.DownloadStarted, job_id, 1))
                assert await pub.flush(ARRIVES_S)
                try:
                    got = await watch.next(2.0)
                except TimeoutError:
                    missed += 1
                else:
                    assert got.job_id == job_id
    finally:
        await pub.close()
        await nc.close()
    assert missed == 0
