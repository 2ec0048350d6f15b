"""The load generator of `benchmarks/gateway.py`: chat requests from several processes.

`Drivers(n)` starts ``n`` worker processes (spawned once, kept for the whole run, so that their
start-up costs nothing measured); `Drivers.run(job)` gives every worker the same `Job` and sums
their `Tally`. A job is either closed loop (``clients`` requests in flight, each sent as soon as
the previous one ended: the most the target can serve) or open loop (requests sent at ``rate``
per second whatever happens to them: the latency a client sees at that load). Each request is
one lean aiohttp POST of a pre-encoded body, read to its end; a streamed reply must end with
``data: [DONE]``, any reply must be 200, or it counts as an error. Only requests that start
after ``warmup`` seconds and before its end are counted. Each worker also reports its own CPU
time, so the caller can show that the generator is not what limits the figures.

A script's helper: must not be imported by the packages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp


@dataclasses.dataclass(frozen=True)
class Job:
    """The load one run sends: to ``urls`` (taken in turn), ``stream`` or not."""

    urls: tuple[str, ...]
    model: str
    stream: bool
    duration_s: float
    warmup_s: float = 1.0
    clients: int = 64  # closed loop: requests in flight, over every worker
    rate: float = 0.0  # open loop when > 0: requests per second, over every worker
    token: str = "unused"  # noqa: S105 (a gateway without keys takes any)


@dataclasses.dataclass
class Tally:
    """What the workers measured: completed requests, errors, latencies in seconds, CPU."""

    ok: int = 0
    errors: int = 0
    sent: int = 0  # every request of the job, warm-up included: what the CPU times paid for
    latencies: list[float] = dataclasses.field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    first_error: str = ""

    def add(self, other: Tally) -> None:
        self.ok += other.ok
        self.errors += other.errors
        self.sent += other.sent
        self.latencies += other.latencies
        self.cpu_s += other.cpu_s
        self.wall_s = max(self.wall_s, other.wall_s)
        self.first_error = self.first_error or other.first_error


def body(model: str, stream: bool) -> bytes:
    """The chat request every client sends."""
    document: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in ten words."}],
        "max_tokens": 16,
        "temperature": 0.7,
        "stream": stream,
    }
    return json.dumps(document).encode()


class _Run:
    """One worker's share of a job."""

    def __init__(self, job: Job, share: int, workers: int) -> None:
        self.job = job
        self.share, self.workers = share, workers
        self.payload = body(job.model, job.stream)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {job.token}"}
        self.urls = itertools.cycle(
            job.urls[share % len(job.urls) :] + job.urls[: share % len(job.urls)]
        )
        self.tally = Tally()
        self.begin = self.end = 0.0

    async def one(self, session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        try:
            async with session.post(
                next(self.urls), data=self.payload, headers=self.headers
            ) as reply:
                data = await reply.read()
                good = reply.status == 200 and (
                    not self.job.stream or data.rstrip().endswith(b"data: [DONE]")
                )
        except (aiohttp.ClientError, OSError) as exc:
            good, data = False, f"{type(exc).__name__}: {exc}".encode()
        took = time.perf_counter() - started
        self.tally.sent += 1
        if not self.begin <= started < self.end:
            return
        if good:
            self.tally.ok += 1
            self.tally.latencies.append(took)
        else:
            self.tally.errors += 1
            self.tally.first_error = self.tally.first_error or data[:300].decode("utf-8", "replace")

    async def closed(self, session: aiohttp.ClientSession, clients: int) -> None:
        async def client() -> None:
            while time.perf_counter() < self.end:
                await self.one(session)

        await asyncio.gather(*(client() for _ in range(clients)))

    async def opened(self, session: aiohttp.ClientSession, rate: float) -> None:
        interval = 1 / rate
        due = time.perf_counter() + interval * self.share / self.workers
        pending: set[asyncio.Task[None]] = set()
        while due < self.end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(session))
            pending.add(task)
            task.add_done_callback(pending.discard)
            due += interval
        if pending:
            await asyncio.wait(pending, timeout=30)

    async def go(self) -> Tally:
        job = self.job
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            cpu, wall = time.process_time(), time.perf_counter()
            self.begin = wall + job.warmup_s
            self.end = self.begin + job.duration_s
            if job.rate > 0:
                await self.opened(session, job.rate / self.workers)
            else:
                clients = job.clients // self.workers + (self.share < job.clients % self.workers)
                await self.closed(session, clients)
            self.tally.cpu_s = time.process_time() - cpu
            self.tally.wall_s = time.perf_counter() - wall
        return self.tally


def _worker(conn: Connection, share: int, workers: int) -> None:
    """A worker process: run each job it is sent, answer with its tally; stop on None."""
    while (job := conn.recv()) is not None:
        conn.send(asyncio.run(_Run(job, share, workers).go()))


class Drivers:
    """``n`` load worker processes; use as a context manager."""

    def __init__(self, n: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = n
        self._pipes: list[Connection] = []
        self._processes = []
        for share in range(n):
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker, args=(theirs, share, n), daemon=True)
            process.start()
            self._pipes.append(ours)
            self._processes.append(process)

    def run(self, job: Job) -> Tally:
        for pipe in self._pipes:
            pipe.send(job)
        total = Tally()
        for pipe in self._pipes:
            total.add(pipe.recv())
        return total

    def __enter__(self) -> Drivers:
        return self

    def __exit__(self, *_: object) -> None:
        for pipe in self._pipes:
            pipe.send(None)
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
