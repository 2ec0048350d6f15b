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

Issue 16's residency (``--warm W``, ``--adapters A``): the pool of the Ollama backends declares
its first W models `warm`, and the emulated nodes already hold them loaded (keep-alive forever);
with A > 0 every other backend is instead a vLLM server (a second multi-node emulator process,
runtime LoRA on, serving one base model) whose pool places that model and A adapters, which the
emulated servers already list as loaded (``--vllm``: the same vLLM servers with no adapter, to
tell the adapters' cost from the vLLM observations'). Either way the steady cycle has nothing
to do: no preload, unload or adapter call (any is a bug, like any pull).

The process runs with the garbage-collector threshold `llmctl serve` sets
(`controller.gctuning.tune`); ``--default-gc`` keeps CPython's defaults instead, to compare.

    .venv/bin/python benchmarks/backend_cycle.py [--backends 1000] [--models 50]
        [--latency-ms 20] [--database sqlite|postgres] [--json] [--profile FILE] [--default-gc]
        [--warm 0] [--adapters 0]

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
from collections.abc import Iterator, Mapping
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy

import migrations
from controller import gctuning
from emulators import catalog, names, runner, vllm, vllm_node
from emulators import ollama as emulator
from runtimestate import database
from runtimestate.backends import adapters, base
from runtimestate.desired import manifest, spec, store
from runtimestate.reconcile import cycle, probing

BASE_MODEL = "bench-base"
SMALL_FIXED = 3  # cycles after the first: one warm-up, then the steady state (median)
CONTROL_FLEET = 10


def model_names(count: int) -> list[str]:
    return [f"bench{i:03d}:1b" for i in range(count)]


def adapter_names(count: int) -> list[str]:
    return [f"bench-lora-{i}" for i in range(count)]


def is_vllm(index: int, shape: Shape) -> bool:
    """With vLLM servers, every other backend is one (the odd ones)."""
    return shape.vllm and index % 2 == 1


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


def _announce(queue: Queue[str], emu: runner.Emulator[Any]) -> None:
    queue.put(emu.url)


def _serve(queue: Queue[str], nodes: int, models: int, warm: int) -> None:
    """Child process: serve `nodes` Ollama nodes with `models` models each, the first `warm` of
    them loaded for ever, until terminated."""

    def build() -> Any:
        host = emulator.build(nodes=nodes, installed=model_names(models), catalog=_catalog(models))
        for node in host.nodes:
            for name in model_names(warm):
                found = node.registry.get(names.parse(name))
                assert found is not None
                node.load(found, -1, None)
        return host

    runner.serve(build, "127.0.0.1", 0, lambda emu: _announce(queue, emu))


def _serve_vllm(queue: Queue[str], nodes: int, adapters: int) -> None:
    """Child process: serve `nodes` vLLM servers of `BASE_MODEL` with runtime LoRA on and
    `adapters` adapters loaded, until terminated."""

    def build() -> Any:
        host = vllm.build(nodes=nodes, model=BASE_MODEL, enable_lora=True)
        for node in host.nodes:
            for name in adapter_names(adapters):
                node.loras[name] = vllm_node.Lora(f"/adapters/{name}", BASE_MODEL)
        return host

    runner.serve(build, "127.0.0.1", 0, lambda emu: _announce(queue, emu))


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the fleet declares: `models` per Ollama backend, the first `warm` of them warm;
    with `adapters` > 0 every other backend is a vLLM server placing that many adapters."""

    models: int
    warm: int = 0
    adapters: int = 0
    with_vllm: bool = False  # every other backend a vLLM server even without adapters

    @property
    def vllm(self) -> bool:
        return self.with_vllm or self.adapters > 0


def fleet_file(urls: dict[str, str], backends: int, shape: Shape) -> str:
    """N backends, the Ollama ones in one pool with the M models they already have (the vLLM
    ones in another, with their base model and adapters); prune: managed."""
    kinds = ["vllm" if is_vllm(i, shape) else "ollama" for i in range(backends)]
    docs = [
        "apiVersion: llmctl/v1\nkind: Backend\n"
        f"metadata: {{name: node-{i:04d}}}\n"
        f'spec: {{type: {kind}, url: "{urls[kind]}/nodes/{i}", prune: managed}}\n'
        for i, kind in enumerate(kinds)
    ]
    warm = set(model_names(shape.warm))
    docs += [
        f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{name}"}}\n'
        + ("spec: {warm: true}\n" if name in warm else "")
        for name in model_names(shape.models)
    ]
    docs.append(_pool("bench", kinds, "ollama", model_names(shape.models), []))
    if shape.vllm:
        docs.append(f"apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: {BASE_MODEL}}}\n")
        docs += [
            f"apiVersion: llmctl/v1\nkind: Adapter\nmetadata: {{name: {name}}}\n"
            f"spec: {{baseModel: {BASE_MODEL}, source: /adapters/{name}}}\n"
            for name in adapter_names(shape.adapters)
        ]
        docs.append(_pool("bench-vllm", kinds, "vllm", [BASE_MODEL], adapter_names(shape.adapters)))
    return "---\n".join(docs)


def _pool(name: str, kinds: list[str], kind: str, models: list[str], loras: list[str]) -> str:
    members = ", ".join(f"node-{i:04d}" for i, k in enumerate(kinds) if k == kind)
    quoted = ", ".join(f'"{model}"' for model in models)
    placed = f", adapters: [{', '.join(loras)}]" if loras else ""
    return (
        f"apiVersion: llmctl/v1\nkind: Pool\nmetadata: {{name: {name}}}\n"
        f"spec: {{backends: [{members}], models: [{quoted}]{placed}}}\n"
    )


_ACTIONS = ("pulls", "prunes", "cancels", "preloads", "unloads", "adapter_loads", "adapter_unloads")


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
        summary: Mapping[str, Any] = report.summary()
        return {
            "wall_s": round(wall, 3),
            "client_cpu_s": round(time.process_time() - cpu, 3),
            "sql_statements": self.counter.statements - before,
            "ready": summary["ready"],
            "actions": sum(summary[key] for key in _ACTIONS),
            "drift": summary["drift"],
            "failed_backends": summary["backends"] - summary["ready"],
        }

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.engine.dispose()


async def _fleet(db_url: str, urls: dict[str, str], backends: int, shape: Shape) -> Fleet:
    migrations.upgrade(db_url)
    engine = database.create_async_engine(db_url)
    sessions = database.session_factory(engine)
    parsed = manifest.parse(fleet_file(urls, backends, shape))
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


async def run(args: argparse.Namespace, urls: dict[str, str], db_urls: list[str]) -> dict[str, Any]:
    for url in urls.values():
        await _admin(url, {"kind": "latency", "latency": args.latency_ms / 1000})
    shape = Shape(args.models, args.warm, args.adapters, args.vllm)
    control = await _fleet(db_urls[0], urls, CONTROL_FLEET, shape)
    try:
        small = await _cycles(control)
    finally:
        await control.aclose()
    fleet = await _fleet(db_urls[1], urls, args.backends, shape)
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
        "warm": args.warm,
        "adapters": args.adapters,
        "vllm": args.vllm or args.adapters > 0,
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
    vllm_count = r["backends"] // 2 if r["vllm"] else 0
    residency = (
        f", {r['warm']} warm"
        + (f"; {vllm_count} of them vLLM with {r['adapters']} adapters" if vllm_count else "")
        if r["warm"] or vllm_count
        else ""
    )
    print(
        f"backend cycle: {r['backends']} backends (Ollama x {r['models']} models{residency}), "
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
        f"{big['median']['ready']} ready, {big['median']['actions']} actions, "
        f"{big['median']['drift']} drift"
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
    parser.add_argument("--warm", type=int, default=0, help="warm models per Ollama backend")
    parser.add_argument(
        "--adapters", type=int, default=0, help="adapters per vLLM backend (every other one)"
    )
    parser.add_argument(
        "--vllm", action="store_true", help="every other backend vLLM (implied by --adapters)"
    )
    parser.add_argument("--profile", help="write cProfile stats of the steady cycles here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--default-gc", action="store_true", help="keep CPython's collector thresholds"
    )
    args = parser.parse_args(argv)
    if not args.default_gc:
        gctuning.tune()  # as `llmctl serve` runs
    context = multiprocessing.get_context("spawn")
    nodes = max(args.backends, CONTROL_FLEET)
    children: dict[str, tuple[Any, Any]] = {
        "ollama": (_serve, (nodes, args.models, args.warm)),
    }
    if args.vllm or args.adapters:
        children["vllm"] = (_serve_vllm, (nodes, args.adapters))
    started = []
    try:
        urls = {}
        for kind, (target, options) in children.items():
            queue: Queue[str] = context.Queue()
            child = context.Process(target=target, args=(queue, *options), daemon=True)
            child.start()
            started.append(child)
            urls[kind] = queue.get(timeout=120)
        with database_urls(args.database) as db_urls:
            result = asyncio.run(run(args, urls, db_urls))
    finally:
        for child in started:
            child.terminate()
            child.join(10)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if _healthy(result) and result["sql_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
