"""Benchmark part: events of one pull whose emulator streams 200 progress lines per second.

Runs a real download cycle (``State.run_download_cycle``) against an emulated Ollama node that
sends a progress line every 5 ms, publishing through a real NATS server to a real subscriber, and
prints: the progress lines the worker received per second, the events published per second for
the job (target at most 5), and the latency from a line's arrival in the worker (when the
progress meter sees it) to the subscriber receiving the event made from it (target p95 at most
250 ms). Used by ``benchmarks/download_queue.py events``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

import nats

import migrations
from dwqueue import events, jobs, publisher, queue
from emulators import ollama
from runtimestate import database, state
from runtimestate.desired import names, spec, store
from runtimestate.downloads import metering
from tests import services


async def _measure(db_url: str, nats_url: str, seconds: float) -> dict[str, Any]:
    arrived: dict[tuple[str, int | None], float] = {}
    lines = 0
    original = metering.Meter.update

    def timed(self: metering.Meter, *args: Any, **kwargs: Any) -> jobs.Progress:
        nonlocal lines
        lines += 1
        progress = original(self, *args, **kwargs)
        arrived.setdefault((progress.status, progress.completed), time.monotonic())
        return progress

    metering.Meter.update = timed  # type: ignore[method-assign]
    received: list[tuple[float, events.DownloadEvent]] = []
    nc = await nats.connect(nats_url)

    async def on_message(msg: Any) -> None:
        received.append((time.monotonic(), events.from_wire(msg.data)))

    await nc.subscribe(events.filter_subject("bench"), cb=on_message)
    sink = publisher.Publisher(nats_url, prefix="bench")
    await sink.start()
    engine = database.create_async_engine(db_url)
    runtime = state.State(engine, sink=sink, environ={})
    model = "qwen2:0.5b"  # 352 MB: `seconds` long at the rate below
    try:
        async with ollama.running(pull_rate=352_000_000 / seconds, tick_interval=0.005) as emu:
            backend = spec.make_backend("gpu-1", "ollama", emu.url)
            sessions = database.session_factory(engine)
            async with sessions() as session, session.begin():
                await store.add_backend(session, backend, pools=())
                change = await queue.enqueue(
                    session, "gpu-1", model, model_key=names.key(model, "ollama")
                )
            while not any(isinstance(e, events.DownloadStarted) for _, e in received):
                await runtime.run_download_cycle()
                await asyncio.sleep(0.05)
            started = time.monotonic()
            await runtime.downloads.drain()
            elapsed = time.monotonic() - started
            await sink.flush()
            await asyncio.sleep(0.3)
    finally:
        metering.Meter.update = original  # type: ignore[method-assign]
        await runtime.aclose()
        await engine.dispose()
        await sink.close()
        await nc.drain()
    mine = [(t, e) for t, e in received if e.job_id == change.job.id]
    progress = [(t, e) for t, e in mine if isinstance(e, events.DownloadProgressed)]
    latencies = [
        (t - arrived[(e.status, e.completed)]) * 1000
        for t, e in progress
        if (e.status, e.completed) in arrived
    ]
    latencies.sort()
    return {
        "pull_s": round(elapsed, 2),
        "lines_per_s": round(lines / elapsed, 1),
        "events": len(mine),
        "progress_events_per_s": round(len(progress) / elapsed, 2),
        "events_per_s": round(len(mine) / elapsed, 2),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "latency_samples": len(latencies),
        "succeeded": any(isinstance(e, events.DownloadSucceeded) for _, e in mine),
    }


def run(seconds: float = 10.0) -> dict[str, Any]:
    """Start NATS, use a SQLite database, pull once; the figures."""
    server = services.NatsServer.launch()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            migrations.upgrade(url)
            return asyncio.run(_measure(url, server.url, seconds))
    finally:
        server.close()
