"""Benchmark: observe a fleet of emulated Ollama nodes concurrently through the adapter.

Starts one multi-node Ollama emulator in a child process (so its CPU does not share our event
loop), arms a fixed added latency on every endpoint of every node, then observes every node
through one long-lived `runtimestate.backends.ollama.OllamaBackend` each, under a semaphore,
twice: a cold round (new connections; every `/api/show` and `/api/version` fetched) and a warm
round (keep-alive connections; show facts and version remembered), which is what each later
backend cycle costs. Prints wall time, observations per second and HTTP
requests per second (counted by the emulator).

The adapters share one aiohttp connection pool, as in `runtimestate.backends.adapters.AdapterPool`;
``--transport httpx`` gives each its own httpx (httpcore) pool instead, as before, to compare.

    .venv/bin/python benchmarks/observe.py [--nodes 1000] [--latency-ms 20] [--concurrency 64]
                                           [--transport aiohttp|httpx] [--json]

Loopback only. Must not be imported by the packages; it is a script.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import statistics
import sys
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from emulators import ollama as emulator
from runtimestate import errors
from runtimestate.backends import aiotransport, base, ollama, showcache, transport

INSTALLED = ["qwen2:0.5b", "nomic-embed-text", "llama3.2:1b"]


def _announce(queue: Queue[str], emu: emulator.Emulator) -> None:
    queue.put(emu.url)


def _serve(queue: Queue[str], nodes: int) -> None:
    """Child process: serve `nodes` Ollama nodes on a free loopback port until terminated."""
    emulator.serve(
        "127.0.0.1", 0, functools.partial(_announce, queue), nodes=nodes, installed=INSTALLED
    )


async def _admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.request(method, f"{url}/_emulator/{path}", json=body)
        response.raise_for_status()
        return response.json()


async def _request_count(url: str) -> int:
    state = await _admin(url, "GET", "state")
    return sum(sum(node["requests"].values()) for node in state["nodes"])


async def _round(
    url: str, adapters: list[ollama.OllamaBackend], concurrency: int
) -> dict[str, Any]:
    """Observe every node once; returns wall time, per-node latencies and failures."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def observe(adapter: ollama.OllamaBackend) -> None:
        async with limit:
            started = time.perf_counter()
            try:
                observation = await adapter.observe()
                assert len(observation.models) == len(INSTALLED)
            except errors.LlmctlError as exc:
                failures[exc.reason] = failures.get(exc.reason, 0) + 1
            latencies.append(time.perf_counter() - started)

    before = await _request_count(url)
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(observe(a) for a in adapters))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    requests = await _request_count(url) - before
    latencies.sort()
    return {
        "wall_s": round(wall, 3),
        "client_cpu_s": round(cpu, 3),
        "observations_per_s": round(len(adapters) / wall, 1),
        "http_requests": requests,
        "http_requests_per_s": round(requests / wall, 1),
        "observe_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "observe_p95_ms": round(latencies[max(0, int(len(latencies) * 0.95) - 1)] * 1000, 1),
        "failures": failures,
    }


async def run(
    nodes: int, latency_ms: float, concurrency: int, url: str, kind: str = "aiohttp"
) -> dict[str, Any]:
    await _admin(url, "POST", "faults", {"kind": "latency", "latency": latency_ms / 1000})
    cache = showcache.ShowCache()
    timeouts = base.Timeouts(connect=2.0, read=5.0, stall=5.0, total=10.0)
    shared = transport.shared_session()

    def pool() -> httpx.AsyncBaseTransport:
        if kind == "httpx":
            return httpx.AsyncHTTPTransport()
        return aiotransport.AiohttpTransport(shared)

    adapters = [
        ollama.OllamaBackend(f"{url}/nodes/{i}", name=f"node-{i}", timeouts=timeouts,
                             show_cache=cache, transport_=pool())
        for i in range(nodes)
    ]  # fmt: skip
    try:
        # Cold: new connections, every /api/show and /api/version fetched. Warm: what each
        # later backend cycle costs with long-lived adapters (keep-alive, cached facts).
        cold = await _round(url, adapters, concurrency)
        warm = await _round(url, adapters, concurrency)
    finally:
        await asyncio.gather(*(a.aclose() for a in adapters))
        await shared.aclose()
    return {
        "transport": kind,
        "nodes": nodes,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "models_per_node": len(INSTALLED),
        "cold": cold,
        "warm": warm,
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"{result['nodes']} Ollama nodes, {result['models_per_node']} models each, "
        f"{result['latency_ms']:g} ms added latency per request, concurrency "
        f"{result['concurrency']}, {result['transport']} transport"
    )
    for label in ("cold", "warm"):
        r = result[label]
        print(
            f"  {label:4}: wall {r['wall_s']:.3f} s (client CPU {r['client_cpu_s']:.2f} s), "
            f"{r['observations_per_s']:.0f} nodes/s, "
            f"{r['http_requests']} requests = {r['http_requests_per_s']:.0f} req/s, "
            f"observe p50 {r['observe_p50_ms']:.0f} ms p95 {r['observe_p95_ms']:.0f} ms, "
            f"failures {r['failures'] or 0}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    queue: Queue[str] = context.Queue()
    child = context.Process(target=_serve, args=(queue, args.nodes), daemon=True)
    child.start()
    try:
        url = queue.get(timeout=60)
        result = asyncio.run(
            run(args.nodes, args.latency_ms, args.concurrency, url, args.transport)
        )
    finally:
        child.terminate()
        child.join(10)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 1 if result["cold"]["failures"] or result["warm"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
