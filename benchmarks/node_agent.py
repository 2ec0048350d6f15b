"""Benchmark: the node agent's weights throughput and start-to-ready overhead, against baselines.

In one run, with real processes on loopback:

- weights: an emulated Hugging Face Hub (`emulators.hfhub`, a child process, no pull-rate
  limit) serves one repo of ``--files`` safetensors shards, ``--bytes`` in all (default 4 files,
  1 GiB). Each round pulls it (a) with ``huggingface_hub.snapshot_download`` alone into a fresh
  directory, in this process, and (b) through a real agent (``llmctl node serve
  --hf-endpoint``) with ``POST /v1/weights/pull``, reading the NDJSON to its last line, into a
  fresh cache (``DELETE /v1/weights/{repo}`` after each round). Rounds alternate a, b, a, b;
  the medians and the ratio agent/direct are printed (target >= 0.9x: PASS or MISS).
- start -> ready: the instance command is the emulated vLLM server (``llmctl emulate vllm``,
  what the tests run in place of ``vllm serve``). Direct: spawn it with the arguments the
  agent would render and poll ``/health`` (200) and ``/v1/models`` (lists the name) every
  ``--poll-ms``. Agent: ``PUT /v1/instances/{name}``, poll the instance the same way, then
  ``GET /v1/instances/{name}`` until ``ready`` (the agent is asked only once the instance
  serves, so both sides load the CPU alike while the runtime starts). Alternated rounds; the
  overhead is the difference of the medians (target <= 100 ms). Each agent round is also cut
  in parts: PUT -> spawn (the instance's ``started_at``), spawn -> serving (the runtime's own
  start) and serving -> ready (the agent's detection); the agent's own parts, PUT -> spawn
  plus detection, are the same figure without the runtime's start-up noise. Detection is
  bounded by ``instances.Settings.startup_probe_interval`` (50 ms: ~25 ms on average); a
  shorter or adaptive period would save tens of milliseconds on a ``vllm serve`` start of
  tens of seconds, at the price of more probes during all of it, so it stays.

    .venv/bin/python benchmarks/node_agent.py [--rounds 5] [--bytes 1073741824] [--files 4]
        [--start-rounds 15] [--poll-ms 5] [--json]

Temporary directories are removed and every process started is stopped. Exits 1 only when
something fails (a pull without ``success``, an instance never ready), not on a MISS.
A script: not imported anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pathlib
import resource
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import httpx
from huggingface_hub import snapshot_download
from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

from emulators import hfhub
from nodeagent import instances

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
REPO = "bench/node-agent"
INSTANCE = "bench/instance"
EMULATED = (
    f"{shlex.quote(LLMCTL)} emulate vllm --host {{host}} --port {{port}} "
    "--served-model-name {name} --model {path}"
)
DEADLINE_S = 600.0


class BenchError(Exception):
    """Something the benchmark needs failed: the run's figures would mean nothing."""


def _serve_hub(queue: Queue[str], files: int, total: int) -> None:
    """Child process: the emulated hub with one repo of `files` shards, until terminated."""
    shard = total // files
    shards: dict[str, bytes | int | None] = {"config.json": b"{}"}
    for i in range(files):
        shards[f"model-{i + 1:05d}-of-{files:05d}.safetensors"] = shard
    hfhub.serve(
        "127.0.0.1", 0, lambda emu: queue.put(emu.url), repos=[hfhub.RepoSpec(REPO, shards)]
    )


@contextlib.contextmanager
def hub(files: int, total: int) -> Iterator[str]:
    """The emulated hub in a child process; yields its URL."""
    context = multiprocessing.get_context("spawn")
    queue: Queue[str] = context.Queue()
    child = context.Process(target=_serve_hub, args=(queue, files, total), daemon=True)
    child.start()
    try:
        yield queue.get(timeout=120)
    finally:
        child.terminate()
        child.join(10)


@contextlib.contextmanager
def agent(tmp: pathlib.Path, hub_url: str) -> Iterator[tuple[httpx.Client, int]]:
    """A real ``llmctl node serve`` over `tmp`; yields a client holding its token, and its pid."""
    token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLMCTL_"))}
    env |= {"LLMCTL_DATA_DIR": str(tmp / "data"), "LLMCTL_NODE_TOKEN": token}
    argv = [LLMCTL, "node", "serve", "--port", "0", "--hf-endpoint", hub_url]
    argv += ["--gpus", "1x80GiB", "--command", EMULATED]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        if "listening on " not in banner:
            raise BenchError(f"the agent did not start: {banner!r}")
        url = banner.split("listening on ")[1].split()[0]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=DEADLINE_S) as client:
            yield client, process.pid
    finally:
        process.send_signal(signal.SIGTERM)  # stops its instances
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system, every thread) of `pid`, or of this process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_pull(hub_url: str, tmp: pathlib.Path) -> tuple[float, float]:
    """Seconds and CPU seconds `snapshot_download` alone takes for the repo, into a fresh
    directory."""
    with tempfile.TemporaryDirectory(dir=tmp) as fresh:
        started, cpu = time.monotonic(), _cpu()
        snapshot_download(REPO, cache_dir=fresh, endpoint=hub_url, token=False)
        return time.monotonic() - started, _cpu() - cpu


def agent_pull(client: httpx.Client, pid: int) -> tuple[float, float]:
    """Seconds from ``POST /v1/weights/pull`` to its last NDJSON line, and the agent's CPU
    seconds; then the agent forgets the repo."""
    started, cpu = time.monotonic(), _cpu(pid)
    with client.stream("POST", "/v1/weights/pull", json={"source": REPO}) as response:
        lines = [line for line in response.iter_lines() if line]
    elapsed, used = time.monotonic() - started, _cpu(pid) - cpu
    last = json.loads(lines[-1]) if lines else {}
    if response.status_code != 200 or last.get("status") != "success":
        raise BenchError(f"the agent's pull failed: {response.status_code} {last}")
    if client.delete(f"/v1/weights/{REPO}").status_code != 200:
        raise BenchError("the agent did not delete the pulled weights")
    return elapsed, used


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _until(check: Any, what: str, poll: float) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(poll)


def _serves(http: httpx.Client, url: str, name: str) -> bool:
    """What the agent checks (`nodeagent.probe.ready`): /health 200, /v1/models lists `name`."""
    try:
        if http.get(f"{url}/health").status_code != 200:
            return False
        cards = http.get(f"{url}/v1/models").json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any(card.get("id") == name for card in cards)


def direct_start(weights: pathlib.Path, poll: float) -> float:
    """Seconds from spawning the instance command until it serves the name; then stops it."""
    port = _free_port()
    argv = shlex.split(EMULATED.format(host="127.0.0.1", port=port, name=INSTANCE, path=weights))
    with httpx.Client(timeout=2) as http:
        started = time.monotonic()
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _until(lambda: _serves(http, url, INSTANCE), "the direct instance", poll)
            return time.monotonic() - started
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def agent_start(client: httpx.Client, weights: pathlib.Path, poll: float) -> dict[str, float]:
    """One start through the agent, then DELETE: seconds from ``PUT /v1/instances/{name}``
    until GET shows ``ready`` (``total``), split in ``spawn`` (PUT until the agent spawned the
    process: the instance's ``started_at``), ``runtime`` (spawn until the instance serves,
    polled directly as `direct_start` does) and ``detect`` (until the agent says ready)."""
    path = f"/v1/instances/{INSTANCE}"
    wall, started = time.time(), time.monotonic()
    put = client.put(path, json={"weights": str(weights), "gpus": 1})
    if put.status_code != 201:
        raise BenchError(f"the agent refused the instance: {put.status_code} {put.text}")
    shown = put.json()
    spawned = shown["started_at"] - wall + started  # the agent's wall clock is this one's
    url = shown["base_url"].removesuffix("/v1")
    serving: float | None = None
    with httpx.Client(timeout=2) as http:

        def ready() -> bool:
            # The agent is asked only once the instance serves: while it starts, this script
            # polls as `direct_start` does, so neither side gets more CPU than the other.
            nonlocal serving
            if serving is None and _serves(http, url, INSTANCE):
                serving = time.monotonic()
            return serving is not None and client.get(path).json()["state"] == "ready"

        _until(ready, "the agent's instance", poll)
    ended = time.monotonic()
    if client.delete(path).status_code != 200:
        raise BenchError("the agent did not stop the instance")
    serving = serving or ended
    return {
        "total": ended - started,
        "spawn": spawned - started,
        "runtime": serving - spawned,
        "detect": ended - serving,
    }


def _weights(client: httpx.Client, tmp: pathlib.Path) -> pathlib.Path:
    """A local weights directory, recorded by the agent so instances can run from it."""
    local = tmp / "weights"
    local.mkdir()
    (local / "config.json").write_text("{}")
    pulled = client.post("/v1/weights/pull", json={"source": str(local)})
    if json.loads(pulled.text.splitlines()[-1]).get("status") != "success":
        raise BenchError(f"the agent did not record {local}: {pulled.text}")
    return local


def _pulls(args: argparse.Namespace, hub_url: str, tmp: pathlib.Path) -> dict[str, Any]:
    """Pull rounds, alternated: (seconds, CPU seconds) of each, direct and through the agent."""
    direct: list[tuple[float, float]] = []
    agent_: list[tuple[float, float]] = []
    with agent(tmp, hub_url) as (client, pid):
        for _ in range(args.rounds):
            os.sync()  # the previous round's writes are not this one's to flush
            direct.append(direct_pull(hub_url, tmp))
            os.sync()
            agent_.append(agent_pull(client, pid))
    size = (args.bytes // args.files) * args.files + 2  # the shards and config.json
    gib = size / 2**30
    direct_mib = size / statistics.median(s for s, _ in direct) / 2**20
    agent_mib = size / statistics.median(s for s, _ in agent_) / 2**20
    return {
        "bytes": size,
        "files": args.files + 1,
        "direct_s": [s for s, _ in direct],
        "agent_s": [s for s, _ in agent_],
        "direct_mib_s": direct_mib,
        "agent_mib_s": agent_mib,
        "ratio": agent_mib / direct_mib,
        "direct_cpu_s_per_gib": statistics.median(c for _, c in direct) / gib,
        "agent_cpu_s_per_gib": statistics.median(c for _, c in agent_) / gib,
    }


def _starts(args: argparse.Namespace, hub_url: str, tmp: pathlib.Path) -> dict[str, Any]:
    """Start rounds, alternated: directly spawned, and through the agent."""
    poll = args.poll_ms / 1000
    spawn_s: list[float] = []
    put: list[dict[str, float]] = []
    with agent(tmp, hub_url) as (client, _):
        weights = _weights(client, tmp)
        for _ in range(args.start_rounds):
            spawn_s.append(direct_start(weights, poll))
            put.append(agent_start(client, weights, poll))
    put_s = [p["total"] for p in put]
    return {
        "spawn_ready_s": spawn_s,
        "put_ready_s": put_s,
        "overhead_ms": (statistics.median(put_s) - statistics.median(spawn_s)) * 1000,
        "parts_ms": {
            k: statistics.median(p[k] for p in put) * 1000 for k in ("spawn", "runtime", "detect")
        },
        "own_ms": statistics.median(p["spawn"] + p["detect"] for p in put) * 1000,
        "startup_probe_interval_ms": instances.Settings().startup_probe_interval * 1000,
        "poll_ms": args.poll_ms,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every round of both measurements, each with an agent of its own; the figures."""
    disable_progress_bars()
    with (
        tempfile.TemporaryDirectory(prefix="llmctl-bench-") as name,
        hub(args.files, args.bytes) as hub_url,
    ):
        tmp = pathlib.Path(name)
        (tmp / "pulls").mkdir()
        (tmp / "starts").mkdir()
        pulls = _pulls(args, hub_url, tmp / "pulls")
        starts = _starts(args, hub_url, tmp / "starts")
    return {**pulls, **starts, "load_average": list(os.getloadavg())}


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _print(r: dict[str, Any]) -> None:
    ratio_ok = "PASS" if r["ratio"] >= 0.9 else "MISS"
    overhead_ok = "PASS" if r["overhead_ms"] <= 100 else "MISS"
    half = r["startup_probe_interval_ms"] / 2
    print(f"node agent: {r['bytes'] / 2**20:.0f} MiB in {r['files']} files, loopback")
    print(
        f"  snapshot_download alone  {r['direct_mib_s']:.0f} MiB/s "
        f"(median of [{_seconds(r['direct_s'])}] s)"
    )
    print(
        f"  agent POST /weights/pull {r['agent_mib_s']:.0f} MiB/s "
        f"(median of [{_seconds(r['agent_s'])}] s)"
    )
    print(f"  agent / direct           {r['ratio']:.2f}x (target >= 0.9x) {ratio_ok}")
    print(
        f"  CPU per GiB              snapshot_download alone {r['direct_cpu_s_per_gib']:.2f} s, "
        f"the agent process {r['agent_cpu_s_per_gib']:.2f} s (medians; the hub's excluded)"
    )
    print(
        f"  spawn -> serving         {statistics.median(r['spawn_ready_s']) * 1000:.0f} ms "
        f"median of [{_seconds(r['spawn_ready_s'])}] s (the emulated vLLM started directly)"
    )
    print(
        f"  PUT -> ready             {statistics.median(r['put_ready_s']) * 1000:.0f} ms "
        f"median of [{_seconds(r['put_ready_s'])}] s (through the agent)"
    )
    print(f"  agent overhead           {r['overhead_ms']:.0f} ms (target <= 100 ms) {overhead_ok}")
    parts = r["parts_ms"]
    own_ok = "PASS" if r["own_ms"] <= 100 else "MISS"
    print(
        f"  PUT -> ready in parts    PUT -> spawn {parts['spawn']:.0f} ms, spawn -> serving "
        f"{parts['runtime']:.0f} ms, serving -> ready {parts['detect']:.0f} ms (medians)"
    )
    print(
        f"  agent's own parts        {r['own_ms']:.0f} ms median per round (PUT -> spawn + "
        f"serving -> ready; target <= 100 ms) {own_ok}: the rounds' spawn -> serving varies "
        "more than the overhead itself"
    )
    print(
        f"  detection                the agent probes a starting instance every "
        f"{r['startup_probe_interval_ms']:.0f} ms (~{half:.0f} ms on average); "
        f"this script polls every {r['poll_ms']:g} ms"
    )
    print(f"  load average             {' '.join(f'{x:.2f}' for x in r['load_average'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="pull rounds of each kind")
    parser.add_argument("--bytes", type=int, default=2**30, help="size of the repo's shards")
    parser.add_argument("--files", type=int, default=4, help="safetensors shards in the repo")
    parser.add_argument("--start-rounds", type=int, default=15, help="start rounds of each kind")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="how often this script polls")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.rounds, args.files, args.start_rounds, args.bytes) < 1 or args.poll_ms <= 0:
        parser.error("--rounds, --files, --start-rounds, --bytes and --poll-ms must be positive")
    try:
        result = run(args)
    except (BenchError, OSError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
