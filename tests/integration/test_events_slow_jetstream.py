"""A NATS server that offers JetStream but does not answer yet, as one just started on a busy
machine: the publisher asks again, and the stream still gets each job's latest event.

A relay between the publisher and a real server renames the JetStream API subjects
(``$JS.API.`` to ``$JX.API.``, same length) while it is muted, so the real server answers the
declaration with "no responders", exactly as a JetStream not ready yet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import nats.aio.client
import nats.js.errors
import pytest

from dwqueue import events, jobs, publisher, replaystream

AT = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
API, HIDDEN = b"$JS.API.", b"$JX.API."


class MutingRelay:
    """A TCP relay to a NATS server that hides its JetStream API while ``muted``."""

    def __init__(self, upstream_port: int) -> None:
        self.muted = True
        self.renamed = 0  # API requests hidden from the server
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        pumps = [self._pump(reader, up_writer, self._rename), self._pump(up_reader, writer, None)]
        for pump in pumps:
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _rename(self, data: bytes) -> bytes:
        if not self.muted:
            return data
        self.renamed += data.count(API)
        return data.replace(API, HIDDEN)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rename: Callable[[bytes], bytes] | None,
    ) -> None:
        held = b""  # the client's commands end in CRLF: only whole lines are renamed and sent
        try:
            while chunk := await reader.read(65536):
                if rename is None:
                    writer.write(chunk)
                else:
                    data = held + chunk
                    end = data.rfind(b"\n") + 1
                    held = data[end:]
                    writer.write(rename(data[:end]))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def _eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def relay(nats_url: str) -> AsyncIterator[MutingRelay]:
    port = int(nats_url.rsplit(":", 1)[1])
    relay = MutingRelay(port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


async def _last(nc: nats.aio.client.Client, stream: str, subject: str) -> Any:
    """The stream's last message on ``subject``; the stream stores a message a moment after
    the server took it, so a few tries are allowed."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await nc.jetstream().get_last_msg(stream, subject)
        except nats.js.errors.NotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def _succeeded(job_id: str, seq: int) -> events.DownloadEvent:
    return events.DownloadSucceeded(
        job_id=jobs.JobId(job_id), backend="gpu-1", model="llama3", seq=seq, at=AT,
        attempt=1, max_attempts=5,
    )  # fmt: skip


async def test_a_stream_declared_late_still_replays_what_was_published_before(
    relay: MutingRelay, nats_url: str, nats_prefix: str
) -> None:
    url = relay.url
    settings = replaystream.Settings(first_retry_s=0.05)
    pub = publisher.Publisher(url, prefix=nats_prefix, stream=settings, reconnect_wait_s=0.2)
    nc = await nats.connect(nats_url)
    job = jobs.new_job_id(AT)
    try:
        await pub.start()
        await _eventually(lambda: relay.renamed >= 2, 10, "two declarations hidden")
        assert pub.jetstream is None  # not known yet: neither replay nor its absence
        live = await nc.subscribe(f"{nats_prefix}.v1.downloads.>")
        await nc.flush()
        assert await pub.publish(_succeeded(job, 3))  # subscribers have it at once
        assert events.from_wire((await live.next_msg(timeout=10)).data).seq == 3
        with pytest.raises(nats.js.errors.NotFoundError):
            await nc.jetstream().stream_info(events.stream_name(nats_prefix))
        relay.muted = False
        await _eventually(lambda: pub.jetstream is True, 20, "the stream declared")
        # Published again once declared: `stats.republished` counts it when NATS took it.
        await _eventually(lambda: pub.stats.republished == 1, 10, "the kept event published")
        assert pub.unsent == 0
        subject = events.downloads_root(nats_prefix) + f".gpu-1.{job}"
        kept = await _last(nc, events.stream_name(nats_prefix), subject)
    finally:
        await pub.close()
        await nc.close()
    assert events.from_wire(kept.data) == _succeeded(job, 3)
    assert pub.stats.republished == 1


async def test_a_jetstream_that_never_answers_is_given_up_and_events_still_flow(
    relay: MutingRelay, nats_url: str, nats_prefix: str
) -> None:
    url = relay.url
    settings = replaystream.Settings(first_retry_s=0.05, retry_for=dt.timedelta(seconds=0.5))
    pub = publisher.Publisher(url, prefix=nats_prefix, stream=settings, reconnect_wait_s=0.2)
    nc = await nats.connect(nats_url)
    try:
        await pub.start()
        live = await nc.subscribe(f"{nats_prefix}.v1.downloads.>")
        await nc.flush()
        await _eventually(lambda: pub.connected, 10, "connected")
        assert await pub.publish(_succeeded(jobs.new_job_id(AT), 3))
        await _eventually(lambda: pub.jetstream is False, 10, "JetStream given up")
        assert pub.unsent == 0  # nothing is kept for a stream that will not come
        assert await pub.publish(_succeeded(jobs.new_job_id(AT), 4))
        seqs = [events.from_wire((await live.next_msg(timeout=10)).data).seq for _ in range(3)]
    finally:
        await pub.close()
        await nc.close()
    assert sorted(seqs) == [3, 3, 4]  # the kept one once more, when given up: seq says it is old
    assert relay.renamed >= 3
