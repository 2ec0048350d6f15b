"""Benchmark: chat through `llmctl gateway` and through LiteLLM's proxy, against going direct.

In one run on this machine: ``--emulators`` emulated vLLM processes (``llmctl emulate vllm``,
``--nodes`` nodes each, every reply paced by ``--ttft`` and ``--token-delay``) are declared as
backends in a fresh SQLite database (``llmctl backend add``, then ``llmctl reconcile --once``
records them Ready, as a controller would); a real ``llmctl gateway`` process follows that
database, and LiteLLM's proxy (``litellm --config``, one worker; ``pip install -e '.[bench]'``)
gets a ``model_list`` of the same deployments. A key is created (``llmctl key create``) and sent
with every request, so the run works whether or not the gateway enforces keys. Then, for
non-streamed and streamed chat in turn (`chatload`: ``--load-processes`` lean aiohttp client
processes), each target gets the same load:

* closed loop, ``--clients`` (64) requests in flight: throughput, the most it serves;
* open loop at half of that throughput: latency p50/p99, beside going direct at the same
  rate, in ``--rounds`` (3) rounds: each round measures both, one right after the other
  (direct first in the first round, the proxy first in the next, and so on); the difference
  is the latency the proxy adds. The figure held against the targets is the median of the
  rounds' differences, and every round's is printed: on a machine this small, one burst of
  someone else's work in one 5-second window moves a p99 by tens of milliseconds.

Direct is round-robin over the backends. Each figure comes with the CPU milliseconds per
request of the proxy process, of the emulators and of the load generator (from /proc), which
hold still on a busy machine when throughput does not; the load generator's busy share (its
CPU over its wall time: under ~80 % it is not what limits a figure) and its own ceiling (its
processes over its CPU per request); and how many cores the whole machine was busy (/proc/stat,
every process, other people's work included: above what our processes take, the figure was
measured on a shared machine). The open loop also shows, per request, how long the proxy and
the emulators were runnable but kept waiting for a CPU, and how many times the proxy was put on
one (/proc/PID/task/*/schedstat): on two cores every process in the path takes turns with the
load generator and the emulators. ``--nice N`` runs every proxy at that scheduling priority
(the same for all), to see where that waiting goes.

Why 20 ms to the first token and 1 ms between tokens (a reply is 10 tokens, so ~29 ms): long
enough that a streamed reply is a real stream (events arrive one by one, as from vLLM), short
enough that 64 clients could ask for ~2,000 replies a second, more than two cores can serve
through any Python proxy. Throughput therefore measures each path's CPU cost per request (not
the backend's latency, which would make every path equal: at a real model's 1--2 s, 64 clients
ask only 30--60 a second), and the open-loop latency shows the overhead at a load the machine
can carry. Targets (issue 18): added p50 <= 1 ms and p99 <= 5 ms at half our maximum
throughput; throughput >= 3x LiteLLM's proxy and >= half of going direct.

    .venv/bin/python benchmarks/gateway.py [--duration 5] [--clients 64] [--load-processes 2]
        [--emulators 2] [--nodes 2] [--ttft 0.02] [--token-delay 0.001] [--no-litellm]
        [--no-nats] [--only nonstream|stream] [--rate R] [--rounds 3] [--floor]
        [--baseline DIR] [--baseline-python PYTHON] [--profile FILE] [--nice N] [--json]

``--floor`` also puts a bare TCP relay (`tcprelay`: one asyncio process, as the gateway is,
copying bytes, no HTTP) in front of the emulators and measures it in the open loop at the
gateway's load: what any Python process in the path costs on this machine, beside what the
gateway costs. ``--rate R`` opens the loop at R req/s for our gateways instead of half their
throughput (to compare two at the same load); ``--baseline DIR`` runs ``llmctl gateway`` from
another tree of the code (``git archive <commit> | tar -x -C DIR``) beside ours, measured in
the same run, on our interpreter or on ``--baseline-python PYTHON`` (one with llmctl's
dependencies: ``PYTHON=python3.12 scripts/install`` in a clone; without ``--baseline``, this
tree); ``--profile FILE`` runs ours under cProfile. Loopback only.
Must not be imported by the packages; it is a script.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import chatload
import gatewayfleet


def _measure(
    drivers: chatload.Drivers, fleet: gatewayfleet.Fleet, job: chatload.Job, pids: list[int]
) -> dict[str, Any]:
    before = (gatewayfleet.cpu_s(pids), gatewayfleet.cpu_s(fleet.emulators))
    waited = (gatewayfleet.waits(pids), gatewayfleet.waits(fleet.emulators))
    machine, wall = gatewayfleet.machine_busy_s(), time.perf_counter()
    tally = drivers.run(job)
    machine, wall = gatewayfleet.machine_busy_s() - machine, time.perf_counter() - wall
    (proxy_wait, proxy_runs), (emulators_wait, _) = (
        tuple(a - b for a, b in zip(gatewayfleet.waits(p), w, strict=True))
        for p, w in ((pids, waited[0]), (fleet.emulators, waited[1]))
    )
    proxy_cpu, emulators_cpu = (
        gatewayfleet.cpu_s(pids) - before[0],
        gatewayfleet.cpu_s(fleet.emulators) - before[1],
    )
    latencies = sorted(tally.latencies) or [float("nan")]
    per_request = 1000 / max(1, tally.sent)  # CPU was spent on every request, warm-up included
    return {
        "throughput": round(tally.ok / job.duration_s, 1),
        "ok": tally.ok,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "proxy_cpu_ms": round(proxy_cpu * per_request, 3),
        "emulators_cpu_ms": round(emulators_cpu * per_request, 3),
        # runnable but kept off a CPU, per request, and how many times the proxy was put on one
        "proxy_wait_ms": round(proxy_wait * per_request, 3),
        "proxy_runs": round(proxy_runs / max(1, tally.sent), 1),
        "emulators_wait_ms": round(emulators_wait * per_request, 3),
        "load_cpu_ms": round(tally.cpu_s * per_request, 3),
        "load_busy": round(tally.cpu_s / max(1e-9, tally.wall_s * drivers.size), 2),
        "machine_cores": round(machine / wall, 2),  # every process's, ours included
    }


def _targets(fleet: gatewayfleet.Fleet) -> dict[str, tuple[tuple[str, ...], list[int]]]:
    targets = {
        "direct": (tuple(f"{n}/v1/chat/completions" for n in fleet.nodes), []),
        "gateway": ((f"{fleet.gateway}/chat/completions",), [fleet.gateway_pid]),
    }
    if fleet.baseline:
        targets["baseline"] = ((f"{fleet.baseline}/chat/completions",), [fleet.baseline_pid])
    if fleet.litellm:
        targets["litellm"] = ((f"{fleet.litellm}/chat/completions",), [fleet.litellm_pid])
    if fleet.floor:
        targets["floor"] = (
            tuple(f"{n}/v1/chat/completions" for n in fleet.floor),
            fleet.floor_pids,
        )
    return targets


def _mode(
    drivers: chatload.Drivers, fleet: gatewayfleet.Fleet, stream: bool, args: argparse.Namespace
) -> dict[str, Any]:
    targets = _targets(fleet)

    def job(name: str, rate: float = 0.0) -> chatload.Job:
        return chatload.Job(
            targets[name][0],
            gatewayfleet.MODEL,
            stream,
            args.duration,
            args.warmup,
            clients=args.clients,
            rate=rate,
            token=fleet.litellm_key if name == "litellm" else fleet.token,
        )

    closed = {
        name: _measure(drivers, fleet, job(name), pids)
        for name, (_, pids) in targets.items()
        if name != "floor"  # measured only at the gateway's load
    }
    opened: dict[str, Any] = {}
    for name in ("gateway", "floor", "baseline", "litellm"):
        if name not in targets:
            continue
        rate = max(1.0, closed["gateway" if name == "floor" else name]["throughput"] / 2)
        if args.rate and name != "litellm":
            rate = args.rate
        rounds = []
        for i in range(args.rounds):  # each round both, in turn; every other round proxy first
            first, second = ("direct", name) if i % 2 == 0 else (name, "direct")
            figures = {
                n: _measure(drivers, fleet, job(n, rate), targets[n][1]) for n in (first, second)
            }
            base, ours = figures["direct"], figures[name]
            rounds.append(
                {
                    "direct": base,
                    "proxy": ours,
                    "added_p50_ms": round(ours["p50_ms"] - base["p50_ms"], 2),
                    "added_p99_ms": round(ours["p99_ms"] - base["p99_ms"], 2),
                }
            )
        opened[name] = {"rate": rate, "rounds": rounds, **_medians(rounds)}
    return {"closed": closed, "open": opened}


_ROUND_FIGURES = ("p50_ms", "p99_ms", "proxy_cpu_ms", "proxy_wait_ms", "proxy_runs",
                  "emulators_wait_ms", "machine_cores")  # fmt: skip


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' medians, figure by figure (errors: their sum)."""

    def median(side: str, key: str) -> float:
        return round(statistics.median(r[side][key] for r in rounds), 3)

    sides = {
        side: {k: median(side, k) for k in _ROUND_FIGURES}
        | {"errors": sum(r[side]["errors"] for r in rounds)}
        for side in ("direct", "proxy")
    }
    added = {
        k: round(statistics.median(r[k] for r in rounds), 2)
        for k in ("added_p50_ms", "added_p99_ms")
    }
    return sides | added


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _print_closed(name: str, f: dict[str, Any], direct: float) -> None:
    ratio = f["throughput"] / max(1e-9, direct)
    print(
        f"  {name:8} closed loop {f['throughput']:6.0f} req/s ({ratio:.2f}x direct), "
        f"p50 {f['p50_ms']:.1f} ms; CPU ms per request: proxy {f['proxy_cpu_ms']:.2f}, "
        f"emulators {f['emulators_cpu_ms']:.2f}, load {f['load_cpu_ms']:.2f} "
        f"(load busy {f['load_busy']:.0%}); machine busy {f['machine_cores']:.1f} cores; "
        f"errors {f['errors']} {f['first_error'][:120]}"
    )


def _print_open(name: str, o: dict[str, Any]) -> None:
    d, p = o["direct"], o["proxy"]
    each = ", ".join(f"{r['added_p50_ms']:+.2f}/{r['added_p99_ms']:+.2f}" for r in o["rounds"])
    print(
        f"  {name:8} open loop at {o['rate']:.0f} req/s, median of {len(o['rounds'])} rounds: "
        f"p50 {p['p50_ms']:.2f} ms (direct {d['p50_ms']:.2f}), p99 {p['p99_ms']:.2f} ms "
        f"(direct {d['p99_ms']:.2f}): added p50 {o['added_p50_ms']:+.2f} ms, "
        f"p99 {o['added_p99_ms']:+.2f} ms (each round's p50/p99: {each}); per request: proxy "
        f"CPU {p['proxy_cpu_ms']:.2f} ms, proxy kept waiting for a CPU {p['proxy_wait_ms']:.2f} "
        f"ms over {p['proxy_runs']:.1f} runs on one, emulators kept waiting "
        f"{p['emulators_wait_ms']:.2f} ms (direct {d['emulators_wait_ms']:.2f}); machine busy "
        f"{p['machine_cores']:.1f} cores; errors {d['errors'] + p['errors']}"
    )


def _print_targets(figures: dict[str, Any]) -> None:
    closed, ours = figures["closed"], figures["closed"]["gateway"]["throughput"]
    said = [f"throughput >= 0.5x direct {_verdict(ours >= closed['direct']['throughput'] / 2)}"]
    if "litellm" in closed:
        times = ours / max(1e-9, closed["litellm"]["throughput"])
        said.append(f">= 3x LiteLLM {_verdict(times >= 3)} ({times:.1f}x)")
    added = figures["open"]["gateway"]
    said.append(f"added p50 <= 1 ms {_verdict(added['added_p50_ms'] <= 1)}")
    said.append(f"p99 <= 5 ms {_verdict(added['added_p99_ms'] <= 5)}")
    print("  targets: " + ", ".join(said))


def _print(result: dict[str, Any]) -> None:
    a = result["setup"]
    load = "/".join(f"{x:.1f}" for x in a["load_before"])
    after = "/".join(f"{x:.1f}" for x in result["load_after"])
    print(
        f"{a['backends']} emulated vLLM backends in {a['emulators']} processes, "
        f"ttft {a['ttft'] * 1000:g} ms, token delay {a['token_delay'] * 1000:g} ms; "
        f"{a['clients']} clients from {a['load_processes']} load processes; "
        f"load average {load} before, {after} after; LiteLLM {a['litellm'] or 'not run'}; "
        f"the gateway follows {a['status_feed']}"
    )
    for mode, figures in result["modes"].items():
        print(f"{mode} chat:")
        closed = figures["closed"]
        for name, f in closed.items():
            _print_closed(name, f, closed["direct"]["throughput"])
        ceiling = 1000 * result["setup"]["load_processes"] / closed["direct"]["load_cpu_ms"]
        print(f"  the load generator's own ceiling: ~{ceiling:,.0f} req/s (its CPU per request)")
        for name, o in figures["open"].items():
            _print_open(name, o)
        _print_targets(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per figure")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--emulators", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2, help="vLLM nodes per emulator process")
    parser.add_argument("--ttft", type=float, default=0.02)
    parser.add_argument("--token-delay", type=float, default=0.001)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-nats", action="store_true", help="gateways poll the database")
    parser.add_argument("--litellm-port", type=int, default=0, help="0: a free one")
    parser.add_argument("--rate", type=float, help="open loop rate for our gateways (req/s)")
    parser.add_argument("--rounds", type=int, default=3, help="open loop rounds (median)")
    parser.add_argument(
        "--floor", action="store_true", help="also a bare TCP relay, at the gateway's load"
    )
    parser.add_argument("--baseline", metavar="DIR", help="also a gateway from this checkout")
    parser.add_argument(
        "--baseline-python", metavar="PYTHON", help="run the baseline gateway on this interpreter"
    )
    parser.add_argument("--profile", metavar="FILE", help="run the gateway under cProfile")
    parser.add_argument(
        "--nice", type=int, help="run every proxy at this nice level (below 0: as root)"
    )
    parser.add_argument("--only", choices=["nonstream", "stream"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    setup = {
        "backends": args.emulators * args.nodes,
        "emulators": args.emulators,
        "ttft": args.ttft,
        "token_delay": args.token_delay,
        "clients": args.clients,
        "load_processes": args.load_processes,
        "load_before": os.getloadavg(),
        "litellm": None if args.no_litellm else gatewayfleet.litellm_version(),
    }
    modes = [m for m in ("nonstream", "stream") if args.only in (None, m)]
    with tempfile.TemporaryDirectory(prefix="llmctl-bench-gateway-") as tmp:
        fleet = gatewayfleet.Fleet(pathlib.Path(tmp), args)
        try:
            fleet.start()
            setup["status_feed"] = "NATS" if fleet.nats else "the database, polled"
            with chatload.Drivers(args.load_processes) as drivers:
                result = {
                    "setup": setup,
                    "modes": {m: _mode(drivers, fleet, m == "stream", args) for m in modes},
                }
        finally:
            fleet.stop()
    result["load_after"] = os.getloadavg()
    print(json.dumps(result)) if args.json else _print(result)
    errors = sum(f["errors"] for m in result["modes"].values() for f in m["closed"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
