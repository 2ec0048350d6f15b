"""Shared pieces of the download-cycle tests: a migrated database, a State, an event recorder."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import backoff, events, flushing, jobs, queue
from runtimestate import clock, database, downloads, state
from runtimestate.desired import names, spec, store

FAST = state.Settings(
    downloads=downloads.Settings(
        lease=dt.timedelta(seconds=2),
        heartbeat_s=0.2,
        retry=backoff.Policy(base_s=0.05, cap_s=0.2, max_attempts=3),
    )
)


class World:
    """A State on a migrated database, plus shortcuts the tests need."""

    def __init__(
        self,
        url: str,
        settings: state.Settings = FAST,
        sink: Any = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        self.url = url
        self.clock = clock
        self.engine = database.create_async_engine(url)
        self.sessions = database.session_factory(self.engine)
        self.state = state.State(self.engine, settings=settings, sink=sink, environ={}, clock=clock)

    async def tx(self, work: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with self.sessions() as session, session.begin():
            return await work(session)

    async def declare(self, name: str, url: str, max_pulls: int = 1) -> None:
        backend = spec.make_backend(name, "ollama", url, max_pulls=max_pulls)
        await self.tx(lambda s: store.add_backend(s, backend, pools=()))

    async def enqueue(self, backend: str, model: str) -> jobs.Job:
        key = names.key(model, "ollama")
        now = self.clock.now()  # due when the worker's clock says so
        change = await self.tx(lambda s: queue.enqueue(s, backend, model, model_key=key, now=now))
        return change.job  # type: ignore[no-any-return]

    async def job(self, job_id: str) -> jobs.Job:
        found = await self.tx(lambda s: queue.get(s, job_id))
        assert found is not None
        return found  # type: ignore[no-any-return]

    async def until(self, job_id: str, *states: jobs.JobState, within_s: float = 20) -> jobs.Job:
        """Run download cycles until the job reaches one of ``states``."""
        deadline = time.monotonic() + within_s
        while True:
            await self.state.run_download_cycle()
            job = await self.job(job_id)
            if job.state in states:
                return job
            assert time.monotonic() < deadline, f"job stuck in {job.state}: {job}"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.state.aclose()
        await self.engine.dispose()


@dataclasses.dataclass
class Recorder:
    """Every download event a NATS subscriber received, decoded."""

    received: list[events.DownloadEvent] = dataclasses.field(default_factory=list)

    def of(self, job_id: str) -> list[events.DownloadEvent]:
        return [e for e in self.received if e.job_id == job_id]

    def types(self, job_id: str) -> list[str]:
        return [type(e).TYPE for e in self.of(job_id)]


async def record(nats_url: str, prefix: str) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    nc = await nats.connect(nats_url)

    async def on_message(msg: Any) -> None:
        recorder.received.append(events.from_wire(msg.data))

    await nc.subscribe(events.filter_subject(prefix), cb=on_message)
    await flushing.flush(nc, 10)  # the server has the SUB
    try:
        yield recorder
    finally:
        await nc.drain()
