"""Benchmark: the download queue on Postgres.

``claims``: how many jobs per second concurrent worker processes claim from one queue
(``dwqueue.leases.claim_committed``, ``--batch`` jobs per claim, each a transaction of its own
as in the download cycle), and a check that no job was claimed twice or left
unclaimed. Jobs are spread over ``--backends`` backends whose pull limit is high enough never to
bind, so the figure is the queue's, not the limits'; each worker marks its jobs done 50 at a
time (one statement, included in the time) so the running set stays small, as it is in
production. Also printed: the workers' CPU time per job claimed (the client's share of the
cost) and the load average at the end, since the figure depends on what else the machine runs.
Postgres is the server named by ``LLMCTL_BENCH_DATABASE_URL`` (a plain postgresql:// URL to a
database it may fill), else a throwaway server started the way the test harness does.

    .venv/bin/python benchmarks/download_queue.py claims [--workers 8] [--jobs 20000]
        [--backends 100] [--batch 1] [--json]

``events``: one pull whose emulator streams 200 progress lines per second, through a real
download cycle and a real NATS server to a subscriber: lines received per second, events
published per second for the job (target at most 5) and the latency from a line's arrival to
the subscriber (target p95 at most 250 ms). See `benchmarks/download_events.py`.

    .venv/bin/python benchmarks/download_queue.py events [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import sqlalchemy as sa

import migrations
from dwqueue import jobs, leases, queue, schema
from runtimestate import database

_FINISH_EVERY = 50  # claimed jobs a worker holds before marking them done in one statement


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    given = os.environ.get("LLMCTL_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    from tests import services

    server = services.PostgresServer.launch()
    try:
        with services.scratch_database(server) as url:
            yield url
    finally:
        server.close()


async def _fill(url: str, count: int, backends: int) -> None:
    """Queue ``count`` jobs, due now, in a few multi-row inserts (enqueueing them one by one
    would take longer than the claims); each row is what `queue.enqueue` would insert."""
    engine = database.create_async_engine(url)
    now = dt.datetime.now(dt.UTC)
    values = [
        {
            "id": jobs.new_job_id(now),
            "backend": f"node-{i % backends:04d}",
            "model": f"model-{i}:7b",
            "model_key": f"model-{i}:7b",
            "declaration": "",
            "state": jobs.JobState.QUEUED.value,
            "attempts": 0,
            "max_attempts": queue.DEFAULT_MAX_ATTEMPTS,
            "next_attempt_at": now + dt.timedelta(microseconds=i),  # claimed in this order
            "status": "",
            "seq": 1,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    try:
        async with database.session_factory(engine)() as session:
            for chunk in range(0, count, 1000):
                await session.execute(sa.insert(schema.download_jobs), values[chunk : chunk + 1000])
            await session.commit()
            await session.execute(sa.text("ANALYZE download_jobs"))
            await session.commit()
    finally:
        await engine.dispose()


def _worker(url: str, owner: str, batch: int, limit: int, start: Barrier, out: Any) -> None:
    out.put(asyncio.run(_claim_until_empty(url, owner, batch, limit, start)))


async def _claim_until_empty(
    url: str, owner: str, batch: int, limit: int, start: Barrier
) -> dict[str, Any]:
    """Claim (and commit) until nothing is queued; the ids claimed, in order, with timings."""
    engine = database.create_async_engine(url, pool_size=1)
    claimed: list[str] = []
    empty_claims = 0
    try:
        sessions = database.session_factory(engine)
        async with sessions() as session:  # connect before the clock starts
            await leases.running_counts(session)
        start.wait()
        began, cpu = time.perf_counter(), time.process_time()
        while True:
            async with sessions() as session:
                changes = await leases.claim_committed(session, owner, default_limit=limit, n=batch)
            if changes:
                claimed.extend(change.job.id for change in changes)
                if len(claimed) % _FINISH_EVERY < len(changes):
                    await _finish(sessions, claimed[-_FINISH_EVERY:])
                continue
            empty_claims += 1
            async with sessions() as session:
                if not await queue.list_jobs(session, states=[jobs.JobState.QUEUED], limit=1):
                    break
        return {
            "claimed": claimed,
            "began": began,
            "ended": time.perf_counter(),
            "cpu": time.process_time() - cpu,
            "empty_claims": empty_claims,
        }
    finally:
        await engine.dispose()


async def _finish(sessions: Any, job_ids: list[str]) -> None:
    """Mark a worker's recent jobs done in one statement, as pulls would finish, so running
    counts stay at a realistic size instead of growing to every job."""
    table = schema.download_jobs
    async with sessions() as session:
        done = {"state": jobs.JobState.SUCCEEDED.value, "lease_owner": None}
        await session.execute(sa.update(table).where(table.c.id.in_(job_ids)).values(done))
        await session.commit()


def claims(url: str, workers: int, count: int, backends: int, batch: int) -> dict[str, Any]:
    migrations.upgrade(url)
    asyncio.run(_fill(url, count, backends))
    limit = count // backends + 1  # never binds
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    out = context.Queue()
    procs = [
        context.Process(target=_worker, args=(url, f"bench-{i}", batch, limit, start, out))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    counts = collections.Counter(job_id for r in results for job_id in r["claimed"])
    claimed = sum(counts.values())
    return {
        "workers": workers,
        "jobs": count,
        "backends": backends,
        "batch": batch,
        "claimed": len(counts),
        "double_claims": claimed - len(counts),
        "empty_claims": sum(r["empty_claims"] for r in results),
        "seconds": round(elapsed, 3),
        "claims_per_s": round(claimed / elapsed),
        "jobs_per_s": round(len(counts) / elapsed),
        "client_cpu_us_per_job": round(sum(r["cpu"] for r in results) / max(claimed, 1) * 1e6),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    c = sub.add_parser("claims", help="claim throughput and double claims on Postgres")
    c.add_argument("--workers", type=int, default=8)
    c.add_argument("--jobs", type=int, default=20_000)
    c.add_argument("--backends", type=int, default=100)
    c.add_argument("--batch", type=int, default=1, help="jobs per claim transaction")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    e = sub.add_parser("events", help="events per second and latency of one fast-ticking pull")
    e.add_argument("--seconds", type=float, default=10.0, help="how long the pull lasts")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.bench == "events":
        _events(args.seconds, args.json)
        return
    with postgres_url() as url:
        r = claims(url, args.workers, args.jobs, args.backends, args.batch)
    if args.json:
        print(json.dumps(r))
        return
    print(
        f"claims: {r['workers']} workers, {r['jobs']} jobs over {r['backends']} backends, "
        f"{r['batch']} per claim (Postgres)\n"
        f"  {r['claimed']} jobs claimed in {r['seconds']:.2f} s: {r['claims_per_s']:,} claims/s, "
        f"{r['double_claims']} double claims, {r['empty_claims']} empty claims at the end\n"
        f"  worker CPU {r['client_cpu_us_per_job']} us per job claimed; "
        f"load average {' '.join(map(str, r['load_average']))}"
    )
    if r["double_claims"] or r["claimed"] != r["jobs"]:
        sys.exit("FAILED: a job was claimed twice or not at all")


def _events(seconds: float, as_json: bool) -> None:
    import download_events

    r = download_events.run(seconds)
    if as_json:
        print(json.dumps(r))
        return
    print(
        f"events: one pull of {r['pull_s']} s, emulator lines received {r['lines_per_s']}/s\n"
        f"  {r['events']} events for the job: {r['events_per_s']}/s overall, "
        f"{r['progress_events_per_s']} progress events/s (target <= 5)\n"
        f"  line -> subscriber latency p50 {r['latency_ms_p50']} ms, p95 {r['latency_ms_p95']} ms "
        f"(target p95 <= 250 ms; {r['latency_samples']} samples); succeeded: {r['succeeded']}"
    )


if __name__ == "__main__":
    main()
