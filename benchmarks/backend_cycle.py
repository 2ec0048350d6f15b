"""Benchmark: the backend cycle over emulated Ollama nodes, against a sequential baseline.

Starts one multi-node Ollama emulator in a child process (N nodes, each with M small catalog
models installed, and L ms of added latency on every endpoint), declares a fleet of N Ollama
backends whose desired set is exactly what they have installed (`prune: managed`, so the plan
is empty: the cycle converged), and runs `runtimestate.reconcile.cycle.BackendCycle` (what
`State.run_backend_cycle` runs) on SQLite or Postgres:

- a first cycle (cold: new connections, every `/api/show` and `/api/version` fetched), one
  warm-up cycle, then three steady-state cycles whose median is reported;
- SQL statements per cycle, counted with a ``before_cursor_execute`` listener, for the same
  cycles on a fleet of 10 backends (nodes 0-9 of the same emulator, its own database) and on
  the fleet of N: the counts must not depend on the fleet size;
- a sequential baseline with the same (warm) adapters: observe one backend after another, no
  concurrency. On a sample of ``--sequential-sample`` nodes (default 100), extrapolated
  linearly to N, because at 20 ms and two requests per node it would take over 40 s;
- peak RSS of this process (`resource.getrusage`; the emulator is another process), client CPU
  time per cycle, and the load average, since the figures depend on what else runs.

The process runs with the garbage-collector threshold `llmctl serve` sets
(`controller.gctuning.tune`); ``--default-gc`` keeps CPython's defaults instead, to compare.

    .venv/bin/python benchmarks/backend_cycle.py [--backends 1000] [--models 50]
        [--latency-ms 20] [--database sqlite|postgres] [--json] [--profile FILE] [--default-gc]

Postgres is ``LLMCTL_BENCH_DATABASE_URL`` if set, else a throwaway server started the way the
test harness does. Loopback only. Exits 1 when a cycle failed to observe a backend or planned
any action (the fleet is converged, so any action is a bug). A script: not imported anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy

import migrations
from controller import gctuning
from emulators import catalog
from emulators import ollama as emulator
from runtimestate import database
from runtimestate.backends import adapters, base
from runtimestate.desired import manifest, spec, store
from runtimestate.reconcile import cycle, probing

SMALL_FIXED = 3  # cycles after the first: one warm-up, then the steady state (median)
CONTROL_FLEET = 10


def model_names(count: int) -> list[str]:
    return [f"bench{i:03d}:1b" for i in range(count)]


def _catalog(count: int) -> catalog.Catalog:
    """`count` small models, half of them embedders, so show facts vary like a real node's."""
    return catalog.Catalog(
        catalog.ModelSpec(
            name=name,
            layers=(1_000_000 + i, 1_482),
            context_length=4096 * (1 + i % 8),
            capabilities=("embedding",) if i % 2 else ("completion", "tools"),
        )
        for i, name in enumerate(model_names(count))
    )


def _announce(queue: Queue[str], emu: emulator.Emulator) -> None:
    queue.put(emu.url)


def _serve(queue: Queue[str], nodes: int, models: int) -> None:
    """Child process: serve `nodes` Ollama nodes with `models` models each, until terminated."""
    emulator.serve(
        "127.0.0.1",
        0,
        lambda emu: _announce(queue, emu),
        nodes=nodes,
        installed=model_names(models),
        catalog=_catalog(models),
    )


def fleet_file(url: str, backends: int, models: int) -> str:
    """N backends in one pool with the M models they already have; prune: managed."""
    docs = [
        "apiVersion: llmctl/v1\nkind: Backend\n"
        f"metadata: {{name: node-{i:04d}}}\n"
        f'spec: {{type: ollama, url: "{url}/nodes/{i}", prune: managed}}\n'
        for i in range(backends)
    ]
    docs += [
        f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{name}"}}\n'
        for name in model_names(models)
    ]
    members = ", ".join(f"node-{i:04d}" for i in range(backends))
    quoted = ", ".join(f'"{name}"' for name in model_names(models))
    docs.append(
        "apiVersion: llmctl/v1\nkind: Pool\nmetadata: {name: bench}\n"
        f"spec: {{backends: [{members}], models: [{quoted}]}}\n"
    )
    return "---\n".join(docs)


@dataclasses.dataclass
class Counter:
    """SQL statements sent through one engine."""

    statements: int = 0

    def __call__(self, *_: Any) -> None:
        self.statements += 1


@dataclasses.dataclass
class Fleet:
    """A cycle on its own database, and the pool of adapters it observes through."""

    engine: Any
    pool: adapters.AdapterPool
    cycle: cycle.BackendCycle
    counter: Counter
    backends: list[spec.Backend]

    async def run(self, profile: cProfile.Profile | None = None) -> dict[str, Any]:
        before, cpu, started = self.counter.statements, time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        report = await self.cycle.run()
        if profile is not None:
            profile.disable()
        wall = time.perf_counter() - started
        summary = report.summary()
        return {
            "wall_s": round(wall, 3),
            "client_cpu_s": round(time.process_time() - cpu, 3),
            "sql_statements": self.counter.statements - before,
            "ready": summary["ready"],
            "actions": summary["pulls"] + summary["prunes"] + summary["cancels"],
            "failed_backends": summary["backends"] - summary["ready"],
        }

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.engine.dispose()


async def _fleet(db_url: str, emu_url: str, backends: int, models: int) -> Fleet:
    migrations.upgrade(db_url)
    engine = database.create_async_engine(db_url)
    sessions = database.session_factory(engine)
    parsed = manifest.parse(fleet_file(emu_url, backends, models))
    async with sessions() as session, session.begin():
        await manifest.apply(session, parsed)
    counter = Counter()
    sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", counter)
    timeouts = base.Timeouts(connect=5.0, read=10.0, stall=10.0, total=20.0)
    pool = adapters.AdapterPool(timeouts, environ={})
    settings = cycle.Settings(deadline_s=120.0, probing=probing.Policy())
    async with sessions() as session:
        declared = list((await store.load(session)).backends)
    return Fleet(
        engine, pool, cycle.BackendCycle(sessions, pool, settings=settings), counter, declared
    )


async def _cycles(fleet: Fleet, profile: cProfile.Profile | None = None) -> dict[str, Any]:
    first = await fleet.run()
    warmup = await fleet.run()
    steady = [await fleet.run(profile) for _ in range(SMALL_FIXED)]
    median = sorted(steady, key=lambda r: r["wall_s"])[len(steady) // 2]
    return {"first": first, "warmup": warmup, "steady": steady, "median": median}


async def _sequential(fleet: Fleet, sample: int) -> dict[str, Any]:
    """Observe `sample` backends one after another through the cycle's own adapters."""
    chosen = fleet.backends[:sample]
    started, cpu = time.perf_counter(), time.process_time()
    for backend in chosen:
        await fleet.pool.get(backend.spec).observe()
    wall = time.perf_counter() - started
    return {
        "sample": len(chosen),
        "sample_wall_s": round(wall, 3),
        "sample_cpu_s": round(time.process_time() - cpu, 3),
        "per_backend_ms": round(wall / len(chosen) * 1000, 2),
    }


async def _admin(url: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(f"{url}/_emulator/faults", json=body)
        response.raise_for_status()


async def run(args: argparse.Namespace, emu_url: str, db_urls: list[str]) -> dict[str, Any]:
    await _admin(emu_url, {"kind": "latency", "latency": args.latency_ms / 1000})
    control = await _fleet(db_urls[0], emu_url, CONTROL_FLEET, args.models)
    try:
        small = await _cycles(control)
    finally:
        await control.aclose()
    fleet = await _fleet(db_urls[1], emu_url, args.backends, args.models)
    profile = cProfile.Profile() if args.profile else None
    try:
        big = await _cycles(fleet, profile)
        sequential = await _sequential(fleet, min(args.sequential_sample, args.backends))
    finally:
        await fleet.aclose()
    if profile is not None:
        profile.dump_stats(args.profile)
    extrapolated = sequential["per_backend_ms"] / 1000 * args.backends
    return {
        "backends": args.backends,
        "models": args.models,
        "latency_ms": args.latency_ms,
        "database": args.database,
        "concurrency": cycle.Settings().concurrency,
        "cycle": big,
        "control": {"backends": CONTROL_FLEET, **small},
        "sql_equal": _sql(small) == _sql(big),
        "sequential": {**sequential, "extrapolated_s": round(extrapolated, 2)},
        "speedup": round(extrapolated / big["median"]["wall_s"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gc_threshold": list(gc.get_threshold()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _sql(result: dict[str, Any]) -> list[int]:
    cycles = [result["first"], result["warmup"], *result["steady"]]
    return [c["sql_statements"] for c in cycles]


@contextlib.contextmanager
def database_urls(kind: str) -> Iterator[list[str]]:
    """Two empty databases: one for the control fleet of 10, one for the fleet of N."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield [f"sqlite:///{tmp}/control.db", f"sqlite:///{tmp}/fleet.db"]
        return
    given = os.environ.get("LLMCTL_BENCH_DATABASE_URL")
    if given:
        yield [given, given]  # the control fleet's backends are replaced by the big fleet's
        return
    from tests import services

    server = services.PostgresServer.launch()
    try:
        with services.scratch_database(server) as a, services.scratch_database(server) as b:
            yield [a, b]
    finally:
        server.close()


def _print(r: dict[str, Any]) -> None:
    big, small, seq = r["cycle"], r["control"], r["sequential"]
    steady = ", ".join(f"{c['wall_s']:.3f}" for c in big["steady"])
    print(
        f"backend cycle: {r['backends']} Ollama backends x {r['models']} models, "
        f"{r['latency_ms']:g} ms added latency, {r['database']}, concurrency {r['concurrency']}, "
        f"gc threshold {tuple(r['gc_threshold'])}"
    )
    print(
        f"  first cycle (cold)   {big['first']['wall_s']:.3f} s "
        f"(client CPU {big['first']['client_cpu_s']:.2f} s)"
    )
    print(
        f"  steady cycle         {big['median']['wall_s']:.3f} s median of [{steady}] "
        f"(client CPU {big['median']['client_cpu_s']:.2f} s), "
        f"{big['median']['ready']} ready, {big['median']['actions']} actions"
    )
    print(
        f"  SQL statements/cycle {CONTROL_FLEET} backends: {_sql(small)}; "
        f"{r['backends']} backends: {_sql(big)} (first, warm-up, steady x3): "
        f"{'equal' if r['sql_equal'] else 'DIFFERENT'}"
    )
    print(
        f"  sequential baseline  {seq['per_backend_ms']:.1f} ms per backend, measured on "
        f"{seq['sample']} backends ({seq['sample_wall_s']:.2f} s) and extrapolated linearly "
        f"to {r['backends']}: {seq['extrapolated_s']:.1f} s"
    )
    print(f"  speed-up             {r['speedup']:.1f}x over the sequential baseline")
    print(f"  peak RSS             {r['peak_rss_mb']:.0f} MB (this process; emulator excluded)")
    print(f"  load average         {' '.join(f'{x:.2f}' for x in r['load_average'])}")


def _healthy(r: dict[str, Any]) -> bool:
    cycles = [r["cycle"]["first"], r["cycle"]["warmup"], *r["cycle"]["steady"]]
    return all(c["failed_backends"] == 0 and c["actions"] == 0 for c in cycles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sequential-sample", type=int, default=100)
    parser.add_argument("--profile", help="write cProfile stats of the steady cycles here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--default-gc", action="store_true", help="keep CPython's collector thresholds"
    )
    args = parser.parse_args(argv)
    if not args.default_gc:
        gctuning.tune()  # as `llmctl serve` runs
    context = multiprocessing.get_context("spawn")
    queue: Queue[str] = context.Queue()
    nodes = max(args.backends, CONTROL_FLEET)
    child = context.Process(target=_serve, args=(queue, nodes, args.models), daemon=True)
    child.start()
    try:
        emu_url = queue.get(timeout=120)
        with database_urls(args.database) as db_urls:
            result = asyncio.run(run(args, emu_url, db_urls))
    finally:
        child.terminate()
        child.join(10)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if _healthy(result) and result["sql_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
