"""Benchmark: how long the ``llmctl`` command takes to answer, as a user runs it.

Times whole processes (the installed console script, a fresh interpreter each run), so the
figure includes Python's start-up and every import a command makes. In one run, interleaved so
that a change in the machine's load touches every command alike: ``python -c pass`` (the floor
no Python CLI can go under), ``llmctl --help``, ``llmctl backend --help``, ``llmctl backend
list`` and ``llmctl backend list -o json`` against a SQLite database of ``--backends`` backends
(1,000 by default, each with a recorded status, as a running controller leaves them). Prints the
median and the fastest of ``--runs`` runs of each, and each median as a ratio to
``python -c pass``; also the load average, since the figures depend on what else the machine
runs. Targets on an idle 2-core machine: ``--help`` at most 0.25 s, ``backend list`` of 1,000
backends at most 0.6 s.

    .venv/bin/python benchmarks/cli.py [--runs 10] [--backends 1000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS_S = {"llmctl --help": 0.25, "llmctl backend list": 0.6}


def _llmctl() -> str:
    beside = pathlib.Path(sys.executable).parent / "llmctl"
    found = str(beside) if beside.exists() else shutil.which("llmctl")
    if found is None:
        raise SystemExit("llmctl is not installed beside this Python; run scripts/install")
    return found


def _fleet(count: int) -> str:
    docs = [
        "apiVersion: llmctl/v1\nkind: Backend\n"
        f"metadata:\n  name: node-{i:04d}\n  labels: {{zone: z{i % 4}}}\n"
        f"spec:\n  type: ollama\n  url: http://10.0.{i // 250}.{i % 250}:11434\n"
        for i in range(count)
    ]
    return "---\n".join(docs)


def _record_status(url: str) -> None:
    """Give every backend an observed status, as a controller's cycles leave it."""
    sys.path.insert(0, str(ROOT))
    import asyncio

    from runtimestate import database, snapshot
    from runtimestate.desired import store
    from runtimestate.reconcile import status

    async def write() -> None:
        engine = database.create_async_engine(url)
        try:
            async with database.session_factory(engine)() as session, session.begin():
                state = await store.load(session)
                now = dt.datetime.now(dt.UTC)
                model = snapshot.PulledModel("llama3.2:1b", "llama3.2:1b", size=1_321_098_329)
                states = {
                    b.name: snapshot.LLMState(
                        id=b.meta.id,
                        name=b.name,
                        type=b.spec.type.value,
                        base_url=b.spec.url,
                        models=(model.name,),
                        pulled_models=(model,),
                        phase=snapshot.Phase.READY,
                        observed_generation=b.meta.generation,
                        last_ok_at=now,
                    )
                    for b in state.backends
                }
                await status.write_states(session, states, {}, now)
        finally:
            await engine.dispose()

    asyncio.run(write())


def _time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - started


def measure(runs: int, backends: int) -> dict[str, Any]:
    llmctl = _llmctl()
    with tempfile.TemporaryDirectory(prefix="llmctl-bench-cli-") as tmp:
        url = f"sqlite:///{pathlib.Path(tmp) / 'llmctl.db'}"
        env = {**os.environ, "LLMCTL_DATA_DIR": tmp, "LLMCTL_DATABASE_URL": url}
        env.pop("LLMCTL_NATS_URL", None)
        manifest = pathlib.Path(tmp) / "fleet.yaml"
        manifest.write_text(_fleet(backends))
        subprocess.run([llmctl, "apply", "-f", str(manifest)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        _record_status(url)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "llmctl --help": [llmctl, "--help"],
            "llmctl backend --help": [llmctl, "backend", "--help"],
            "llmctl backend list": [llmctl, "backend", "list"],
            "llmctl backend list -o json": [llmctl, "backend", "list", "-o", "json"],
        }
        for command in commands.values():  # warm the file cache and the bytecode
            _time(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                times[name].append(_time(command, env))
    floor = statistics.median(times["python -c pass"])
    return {
        "runs": runs,
        "backends": backends,
        "loadAverage": os.getloadavg(),
        "commands": {
            name: {
                "medianS": statistics.median(found),
                "fastestS": min(found),
                "ratioToPython": statistics.median(found) / floor,
                "targetS": TARGETS_S.get(name),
            }
            for name, found in times.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.runs, args.backends)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.runs} runs each, {args.backends} backends (SQLite)")
    for name, figures in result["commands"].items():
        target = figures["targetS"]
        verdict = "" if target is None else (
            f"  target {target:.2f} s {'met' if figures['medianS'] <= target else 'MISSED'}"
        )  # fmt: skip
        print(
            f"{name:<30} median {figures['medianS']:.3f} s  fastest {figures['fastestS']:.3f} s"
            f"  {figures['ratioToPython']:5.1f}x python -c pass{verdict}"
        )
    load = ", ".join(f"{x:.2f}" for x in result["loadAverage"])
    print(f"load average at the end: {load}")


if __name__ == "__main__":
    main()
