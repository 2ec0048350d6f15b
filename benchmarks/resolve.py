"""Benchmark: resolver decisions at 10,000 (backend, model) candidates, and LiteLLM's Router.

Builds one snapshot of ``--backends`` backends (a third vLLM with load figures, the rest Ollama
with some models loaded) serving ``--per-backend`` models each, drawn from ``--names`` model
names, so every name has about backends * per-backend / names candidates. Then, per policy,
times ``--decisions`` calls of `Resolver.resolve` (a model name, chat, a minimum context on
every other request) one by one with ``perf_counter_ns``, after a warm-up that builds the
index. Outcomes and in-flight counts are reported beforehand, and a few providers are cooling
down, so the adaptive, least-loaded and cooldown paths do real work. Prints p50/p99 per policy,
and what an application pays around each call it makes: ``begin`` + ``end`` and
``record_outcome``, which keep the per-candidate signal lists the policies read in step, and
``record_outcome`` on a resolver sharing its outcomes (issue 19), timed alternately with the
other in the same run.

In the same run, LiteLLM's ``Router`` (a benchmark-only dependency: ``pip install litellm``)
is given the same deployments and timed choosing one with ``async_get_available_deployment``
(the path ``acompletion`` takes) under the comparable strategies; the ratio is printed. If
LiteLLM cannot be imported or used offline, the output says so.

With ``--adapters N`` (issue 16) every vLLM backend also has N LoRA adapters loaded, drawn from
``--adapter-names`` names, each on a base model the backend serves (a model card with a
`parent`, as vLLM lists it, and placed there): requests then name adapters too, in proportion
to their share of the names, and their own p50/p99 are printed beside every request's. The
models of the snapshot are the same with and without adapters (adapters draw from their own
random generator), so the figures compare.

    .venv/bin/python benchmarks/resolve.py [--backends 500] [--per-backend 20] [--names 100]
                                           [--decisions 20000] [--adapters 0]
                                           [--adapter-names 20] [--json]

In-process; no network but the loopback connection to the nats-server the shared
``record_outcome`` publishes to (started and stopped here). Must not be imported by the
packages; it is a script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtimestate import resolver, snapshot

CONTEXTS = (2048, 4096, 8192, 32768, 131072)
# Our policy -> the LiteLLM routing strategy that does the same job.
LITELLM_STRATEGIES = {
    "random": "simple-shuffle",
    "least_loaded": "least-busy",
    "adaptive": "latency-based-routing",
}


def fleet(
    backends: int,
    per_backend: int,
    names: int,
    seed: int = 1,
    adapters: int = 0,
    adapter_names: int = 20,
) -> snapshot.Snapshot:
    rng = random.Random(seed)
    lora_rng = random.Random(seed + 1000)  # the models stay the same with or without adapters
    model_names = [f"model-{i}:{rng.choice(('1b', '7b', '70b'))}" for i in range(names)]
    loras = [f"lora-{i}" for i in range(adapter_names)]
    states = {}
    for b in range(backends):
        name = f"gpu-{b}"
        vllm = b % 3 == 0
        pulled = tuple(
            snapshot.PulledModel(
                name=model,
                model=model,
                context_length=rng.choice(CONTEXTS),
                can_chat=True,
                can_prompt=True,
                can_stream=True,
                can_embed=rng.random() < 0.1,
                loaded=vllm or rng.random() < 0.3,
            )
            for model in rng.sample(model_names, per_backend)
        )
        load = (
            snapshot.Load(running=rng.randint(0, 8), waiting=rng.randint(0, 4))
            if vllm
            else (snapshot.Load())
        )
        placed = _adapters(lora_rng, pulled, loras, adapters) if vllm else ()
        states[name] = snapshot.LLMState(
            id=b + 1,
            name=name,
            type="vllm" if vllm else "ollama",
            base_url=f"http://10.0.{b // 250}.{b % 250}:{8000 if vllm else 11434}",
            models=(),
            pulled_models=pulled + placed,
            phase=snapshot.Phase.READY if rng.random() < 0.95 else snapshot.Phase.UNREACHABLE,
            load=load,
            adapters=tuple(m.name for m in placed),
        )
    return snapshot.Snapshot(states)


def _adapters(
    rng: random.Random, models: tuple[snapshot.PulledModel, ...], loras: list[str], count: int
) -> tuple[snapshot.PulledModel, ...]:
    """`count` adapters loaded on a vLLM backend, as its `/v1/models` lists them: a card with
    the base model as `parent`, and the parent's context length."""
    result = []
    for lora in rng.sample(loras, min(count, len(loras))):
        parent = rng.choice(models)
        result.append(
            snapshot.PulledModel(
                name=lora,
                model=lora,
                context_length=parent.context_length,
                can_chat=True,
                can_prompt=True,
                can_stream=True,
                loaded=True,
                parent=parent.name,
            )
        )
    return tuple(result)


def requests(snap: snapshot.Snapshot, count: int, policy: str, seed: int = 2) -> list[Any]:
    rng = random.Random(seed)
    names = sorted({m.name for s in snap.backends.values() for m in s.pulled_models})
    return [
        resolver.Request(
            models=(rng.choice(names),),
            capability="chat",
            min_context=4096 if i % 2 else None,
            session=f"user-{rng.randrange(10_000)}",
            policy=resolver.Policy(policy),
        )
        for i in range(count)
    ]


def warm_up(r: resolver.Resolver, snap: snapshot.Snapshot) -> None:
    """Report outcomes and in-flight calls, and trip a few breakers, as a live app would."""
    rng = random.Random(3)
    providers = [r.provider(c) for c in r.index().all if c.phase is snapshot.Phase.READY]
    for p in rng.sample(providers, min(2000, len(providers))):
        r.record_outcome(p, rng.random() > 0.05, rng.uniform(0.05, 2.0))
    for p in rng.sample(providers, min(200, len(providers))):
        r.begin(p)
    for p in rng.sample(providers, min(20, len(providers))):
        for _ in range(3):
            r.record_outcome(p, False, 0.01)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples_ns.sort()
    q = statistics.quantiles(samples_ns, n=100, method="inclusive")
    return {
        "p50_us": q[49] / 1000,
        "p99_us": q[98] / 1000,
        "mean_us": statistics.fmean(samples_ns) / 1000,
    }


def bench_ours(snap: snapshot.Snapshot, decisions: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per policy, the round with the lowest p50 (other processes on the machine add noise)."""
    results: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for policy, figures in _round(snap, decisions).items():
            if policy not in results or figures["p50_us"] < results[policy]["p50_us"]:
                results[policy] = figures
    return results


def _round(snap: snapshot.Snapshot, decisions: int) -> dict[str, dict[str, float]]:
    results = {}
    loras = {m.name for s in snap.backends.values() for m in s.pulled_models if m.parent}
    for policy in resolver.Policy:
        r = resolver.Resolver.from_snapshot(snap, rng=random.Random(4))
        warm_up(r, snap)
        batch = requests(snap, decisions, policy.value)
        for request in batch[:2000]:  # build the index and the pools, warm the caches
            with contextlib.suppress(resolver.ResolveError):
                r.resolve(request)
        wall, cpu, lora_wall = [], [], []
        wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
        for request in batch:
            started, started_cpu = wall_clock(), cpu_clock()
            with contextlib.suppress(resolver.ResolveError):
                r.resolve(request)
            cpu.append(cpu_clock() - started_cpu)
            wall.append(wall_clock() - started)
            if request.models[0] in loras:
                lora_wall.append(wall[-1])
        figures = percentiles(wall)
        if len(lora_wall) > 1:
            lora_figures = percentiles(lora_wall)
            figures["adapter_p50_us"] = lora_figures["p50_us"]
            figures["adapter_p99_us"] = lora_figures["p99_us"]
            figures["adapter_requests"] = len(lora_wall)
        cpu_figures = percentiles(cpu)
        figures["cpu_p50_us"], figures["cpu_p99_us"] = cpu_figures["p50_us"], cpu_figures["p99_us"]
        results[policy.value] = figures
    return results


def bench_bookkeeping(snap: snapshot.Snapshot, calls: int) -> dict[str, dict[str, float]]:
    """What an application pays around each decision: `begin` + `end` (one call in flight) and
    `record_outcome`, which keep the policies' per-candidate signal lists in step; and
    `record_outcome` again on a resolver sharing its outcomes on NATS (an embedded nats-server
    on loopback), the two timed alternately in one run."""
    return asyncio.run(_bookkeeping(snap, calls))


async def _bookkeeping(snap: snapshot.Snapshot, calls: int) -> dict[str, dict[str, float]]:
    import tempfile

    import nats

    from controller import embedded_nats

    r = resolver.Resolver.from_snapshot(snap, rng=random.Random(5))
    shared = resolver.Resolver.from_snapshot(snap, rng=random.Random(5))
    warm_up(r, snap)
    warm_up(shared, snap)
    rng = random.Random(6)
    ready = [r.provider(c) for c in r.index().all if c.phase is snapshot.Phase.READY]
    chosen = [rng.choice(ready) for _ in range(calls)]
    clock = time.perf_counter_ns
    pairs: list[int] = []
    timed: dict[str, list[int]] = {"record_outcome": [], "record_outcome_shared": []}
    with tempfile.TemporaryDirectory() as data_dir:
        server = embedded_nats.EmbeddedNats(Path(data_dir))
        server.start(announce=False)
        nc = await nats.connect(server.url, token=server.token)
        try:
            await shared.share_outcomes(nc, "bench")
            for n, p in enumerate(chosen):
                started = clock()
                r.begin(p)
                r.end(p)
                pairs.append(clock() - started)
                shared.begin(p)  # the same work on both, so both are as warm in the cache
                shared.end(p)
                ok, latency = rng.random() > 0.05, rng.uniform(0.05, 2.0)
                order = [("record_outcome", r), ("record_outcome_shared", shared)]
                for name, which in order if n % 2 else reversed(order):
                    started = clock()
                    which.record_outcome(p, ok, latency)
                    timed[name].append(clock() - started)
                if n % 100 == 99:
                    await asyncio.sleep(0)  # the sharing task sends (not timed)
        finally:
            await shared.aclose()
            await nc.close()
            server.stop()
    return {"begin_end": percentiles(pairs), **{k: percentiles(v) for k, v in timed.items()}}


def litellm_model_list(snap: snapshot.Snapshot) -> list[dict[str, Any]]:
    deployments = []
    for state in snap.backends.values():
        if state.phase is not snapshot.Phase.READY:
            continue
        for model in state.pulled_models:
            prefix = "hosted_vllm" if state.type == "vllm" else "ollama_chat"
            deployments.append(
                {
                    "model_name": model.name,
                    "litellm_params": {
                        "model": f"{prefix}/{model.name}",
                        "api_base": state.base_url,
                    },
                    "model_info": {"id": f"{state.name}/{model.name}"},
                }
            )
    return deployments


async def _time_litellm(router: Any, batch: list[Any]) -> list[int]:
    messages = [{"role": "user", "content": "hi"}]
    for request in batch[:200]:
        await router.async_get_available_deployment(
            model=request.models[0], messages=messages, request_kwargs={}
        )
    samples = []
    clock = time.perf_counter_ns
    for request in batch:
        started = clock()
        await router.async_get_available_deployment(
            model=request.models[0], messages=messages, request_kwargs={}
        )
        samples.append(clock() - started)
    return samples


def bench_litellm(snap: snapshot.Snapshot, decisions: int, policies: list[str]) -> dict[str, Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    try:
        import litellm
        from litellm.router import Router
    except ImportError as exc:
        return {"error": f"LiteLLM is not installed ({exc}); pip install litellm"}
    litellm.suppress_debug_info = True
    model_list = litellm_model_list(snap)
    results: dict[str, Any] = {"deployments": len(model_list), "version": _version()}
    for policy in policies:
        strategy = LITELLM_STRATEGIES[policy]
        try:
            built = time.perf_counter()
            router = Router(model_list=model_list, routing_strategy=strategy)  # type: ignore[arg-type]
            build_s = time.perf_counter() - built
            batch = requests(snap, decisions, policy)
            samples = asyncio.run(_time_litellm(router, batch))
        except Exception as exc:  # whatever stops LiteLLM is reported; our figures stand
            results[policy] = {"strategy": strategy, "error": f"{type(exc).__name__}: {exc}"}
            continue
        results[policy] = {"strategy": strategy, "build_s": build_s, **percentiles(samples)}
    return results


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("litellm")
    except metadata.PackageNotFoundError:
        return "unknown"


def calibration_ms() -> float:
    """How fast this interpreter and CPU are: ``sum(range(10**6))`` (about 8 ms on a recent
    laptop with CPython 3.11), so figures from different machines can be compared."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(range(10**6))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", type=int, default=500)
    parser.add_argument("--per-backend", type=int, default=20)
    parser.add_argument("--names", type=int, default=100)
    parser.add_argument("--adapters", type=int, default=0, help="LoRA adapters per vLLM backend")
    parser.add_argument("--adapter-names", type=int, default=20, help="adapter names to draw from")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="report each policy's best round")
    parser.add_argument("--litellm-decisions", type=int, default=2_000)
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM comparison")
    parser.add_argument(
        "--litellm-policies",
        default="random,least_loaded",
        help=f"policies to compare (a Router per policy; each takes a minute to build at 10,000 "
        f"deployments): {','.join(LITELLM_STRATEGIES)}",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    snap = fleet(
        args.backends,
        args.per_backend,
        args.names,
        adapters=args.adapters,
        adapter_names=args.adapter_names,
    )
    candidates = sum(len(s.pulled_models) for s in snap.backends.values())
    loras = sum(1 for s in snap.backends.values() for m in s.pulled_models if m.parent)
    built = time.perf_counter()
    resolver.Resolver.from_snapshot(snap).index()
    index_ms = (time.perf_counter() - built) * 1000
    ours = bench_ours(snap, args.decisions, args.rounds)
    bookkeeping = bench_bookkeeping(snap, args.decisions)
    theirs: dict[str, Any] = (
        {"skipped": True}
        if args.no_litellm
        else bench_litellm(snap, args.litellm_decisions, args.litellm_policies.split(","))
    )
    doc = {
        "candidates": candidates,
        "backends": args.backends,
        "names": args.names,
        "adapters_per_vllm_backend": args.adapters,
        "adapter_candidates": loras,
        "candidates_per_name": candidates / args.names,
        "index_build_ms": index_ms,
        "resolver": ours,
        "bookkeeping": bookkeeping,
        "litellm": theirs,
        "targets": {"p50_us": 20, "p99_us": 100},
        "rounds": args.rounds,
        "loadavg_1m": os.getloadavg()[0],
        "calibration_ms": calibration_ms(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(
        f"{candidates} candidates ({args.backends} backends, {args.names} names, "
        f"~{candidates / args.names:.0f} per name); index built in {index_ms:.1f} ms; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"best of {args.rounds} rounds; sum(range(10**6)) takes {calibration_ms():.1f} ms here"
    )
    if loras:
        print(
            f"{loras} of them LoRA adapters ({args.adapters} per vLLM backend, "
            f"{args.adapter_names} adapter names); requests naming one: own p50/p99 at the right"
        )
    print("                 wall clock         CPU time (excludes time other processes took)")
    header = f"{'policy':<16}{'p50 µs':>9}{'p99 µs':>9}{'p50 µs':>11}{'p99 µs':>9}"
    print(f"{header}   target p50 <= 20, p99 <= 100")
    for policy, f in ours.items():
        wall_ok = f["p50_us"] <= 20 and f["p99_us"] <= 100
        cpu_ok = f["cpu_p50_us"] <= 20 and f["cpu_p99_us"] <= 100
        verdict = f"wall {'ok' if wall_ok else 'MISSED'}, cpu {'ok' if cpu_ok else 'MISSED'}"
        lora = (
            f"; adapters p50 {f['adapter_p50_us']:.1f} p99 {f['adapter_p99_us']:.1f}"
            if "adapter_p50_us" in f
            else ""
        )
        print(
            f"{policy:<16}{f['p50_us']:>9.1f}{f['p99_us']:>9.1f}"
            f"{f['cpu_p50_us']:>11.1f}{f['cpu_p99_us']:>9.1f}   {verdict}{lora}"
        )
    pair, outcome = bookkeeping["begin_end"], bookkeeping["record_outcome"]
    shared = bookkeeping["record_outcome_shared"]
    print(
        f"around each call: begin + end p50 {pair['p50_us']:.1f} µs (p99 {pair['p99_us']:.1f}), "
        f"record_outcome p50 {outcome['p50_us']:.1f} µs (p99 {outcome['p99_us']:.1f}); "
        f"sharing outcomes on NATS p50 {shared['p50_us']:.1f} µs (p99 {shared['p99_us']:.1f})"
    )
    if "error" in theirs:
        print(f"LiteLLM: not measured: {theirs['error']}")
        return
    if theirs.get("skipped"):
        return
    print(f"LiteLLM {theirs['version']} Router, {theirs['deployments']} deployments:")
    for policy in args.litellm_policies.split(","):
        figures = theirs[policy]
        if "error" in figures:
            print(f"  {figures['strategy']:<24} not measured: {figures['error']}")
            continue
        ratio = figures["p50_us"] / ours[policy]["p50_us"]
        print(
            f"  {figures['strategy']:<24} p50 {figures['p50_us']:>9.1f} µs  p99 "
            f"{figures['p99_us']:>9.1f} µs  = {ratio:,.0f}x our {policy} p50 "
            f"(Router built in {figures['build_s']:.0f} s)"
        )


if __name__ == "__main__":
    main()
