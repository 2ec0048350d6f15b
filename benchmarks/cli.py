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

    .venv/bin/python benchmarks/cli.py [--runs 10] [--backends 1000] [--baseline DIR] [--json]

``--baseline DIR`` also times the llmctl of another checkout (its ``.venv``, made by
``scripts/install``; e.g. a ``git worktree`` of the commit before a change) in the same run,
interleaved, each against a database made by its own code.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS_S = {"llmctl --help": 0.25, "llmctl backend list": 0.6}


def _llmctl(root: pathlib.Path) -> str:
    found = root / ".venv" / "bin" / "llmctl"
    if not found.exists():
        raise SystemExit(f"no llmctl in {root / '.venv'}; run scripts/install there")
    return str(found)


def _fleet(count: int) -> str:
    docs = [
        "apiVersion: llmctl/v1\nkind: Backend\n"
        f"metadata:\n  name: node-{i:04d}\n  labels: {{zone: z{i % 4}}}\n"
        f"spec:\n  type: ollama\n  url: http://10.0.{i // 250}.{i % 250}:11434\n"
        for i in range(count)
    ]
    return "---\n".join(docs)


# Run by the Python of the checkout being timed, from its root: the status rows are written
# by that checkout's own code, whatever its schema.
_RECORD_STATUS = """
import asyncio, datetime as dt, sys
from runtimestate import database, snapshot
from runtimestate.desired import store
from runtimestate.reconcile import status

async def write(url):
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            state = await store.load(session)
            now = dt.datetime.now(dt.UTC)
            model = snapshot.PulledModel("llama3.2:1b", "llama3.2:1b", size=1_321_098_329)
            states = {
                b.name: snapshot.LLMState(
                    id=b.meta.id, name=b.name, type=b.spec.type.value, base_url=b.spec.url,
                    models=(model.name,), pulled_models=(model,), phase=snapshot.Phase.READY,
                    observed_generation=b.meta.generation, last_ok_at=now,
                )
                for b in state.backends
            }
            await status.write_states(session, states, {}, now)
    finally:
        await engine.dispose()

asyncio.run(write(sys.argv[1]))
"""


def _fleet_database(root: pathlib.Path, directory: pathlib.Path, backends: int) -> dict[str, str]:
    """A SQLite database of ``backends`` backends, each with a recorded status (as a running
    controller leaves them), made by the checkout at ``root``; the environment that uses it."""
    python = root / ".venv" / "bin" / "python"
    url = f"sqlite:///{directory / 'llmctl.db'}"
    env = {**os.environ, "LLMCTL_DATA_DIR": str(directory), "LLMCTL_DATABASE_URL": url}
    env.pop("LLMCTL_NATS_URL", None)
    manifest = directory / "fleet.yaml"
    manifest.write_text(_fleet(backends))
    quiet = {"env": env, "check": True, "stdout": subprocess.DEVNULL, "cwd": root}
    subprocess.run([_llmctl(root), "apply", "-f", str(manifest)], **quiet)  # type: ignore[call-overload]
    subprocess.run([str(python), "-c", _RECORD_STATUS, url], **quiet)  # type: ignore[call-overload]
    return env


def _time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    return time.perf_counter() - started


def _commands(llmctl: str, label: str) -> dict[str, list[str]]:
    return {
        f"{label}llmctl --help": [llmctl, "--help"],
        f"{label}llmctl backend --help": [llmctl, "backend", "--help"],
        f"{label}llmctl backend list": [llmctl, "backend", "list"],
        f"{label}llmctl backend list -o json": [llmctl, "backend", "list", "-o", "json"],
    }


def measure(runs: int, backends: int, baseline: pathlib.Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="llmctl-bench-cli-") as tmp:
        ours = pathlib.Path(tmp) / "ours"
        ours.mkdir()
        plan = [({"python -c pass": [sys.executable, "-c", "pass"]}, dict(os.environ))]
        plan.append((_commands(_llmctl(ROOT), ""), _fleet_database(ROOT, ours, backends)))
        if baseline is not None:
            theirs = pathlib.Path(tmp) / "baseline"
            theirs.mkdir()
            env = _fleet_database(baseline, theirs, backends)
            plan.append((_commands(_llmctl(baseline), "baseline: "), env))
        times: dict[str, list[float]] = {name: [] for commands, _ in plan for name in commands}
        for round_ in range(runs + 1):  # the first round warms the file cache and bytecode
            for commands, env in plan:
                for name, command in commands.items():
                    took = _time(command, env)
                    if round_:
                        times[name].append(took)
    floor = statistics.median(times["python -c pass"])
    return {
        "runs": runs,
        "backends": backends,
        "baseline": None if baseline is None else str(baseline),
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
    parser.add_argument(
        "--baseline",
        type=pathlib.Path,
        help="root of another checkout (with its .venv) whose llmctl is timed in the same run",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.runs, args.backends, args.baseline)
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
            f"{name:<40} median {figures['medianS']:.3f} s  fastest {figures['fastestS']:.3f} s"
            f"  {figures['ratioToPython']:5.1f}x python -c pass{verdict}"
        )
    load = ", ".join(f"{x:.2f}" for x in result["loadAverage"])
    print(f"load average at the end: {load}")


if __name__ == "__main__":
    main()
