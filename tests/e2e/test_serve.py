"""``llmctl serve`` as a subprocess on real Postgres and NATS, against emulated Ollama nodes:
convergence, triggers, events, the HTTP endpoints."""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib
import signal
import subprocess
import time
from typing import Any

import nats

from dwqueue import flushing
from emulators import ollama
from tests.e2e import serve_harness as h

# A schedule that never fires during a test: whatever happens is the start-up cycle or a trigger.
NEVER = "0 0 1 1 *"


async def test_serve_converges_and_a_model_declared_while_it_runs_pulls_within_two_seconds(
    tmp_path: pathlib.Path, postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    async with ollama.running(pull_rate=150e6) as emu:
        text = h.fleet({"edge-1": ("ollama", emu.url, "managed")}, ["all-minilm"])
        serve = h.Serve(tmp_path, postgres_url, nats_url, nats_prefix, args=("--cycle-cron", NEVER))
        serve.start()
        try:
            await serve.ready()  # migrations applied by serve itself
            await h.declare(postgres_url, text, nats_url=nats_url, prefix=nats_prefix)
            await h.eventually(
                lambda: "all-minilm:latest" in h.installed(emu.nodes[0]), 10, "first pull", serve
            )

            seen: list[dict[str, Any]] = []
            client = await nats.connect(nats_url)

            async def on_event(msg: Any) -> None:
                seen.append({**json.loads(msg.data), "received": time.monotonic()})

            await client.subscribe(f"{nats_prefix}.v1.downloads.>", cb=on_event)
            await flushing.flush(client, 10)  # the server has the SUB
            more = h.fleet({"edge-1": ("ollama", emu.url, "managed")}, ["all-minilm", "qwen2:0.5b"])
            await h.declare(postgres_url, more, nats_url=nats_url, prefix=nats_prefix)
            # The CLI commits and asks for a cycle just before it exits; its start-up (seconds
            # on a busy machine) is not the controller's reaction time.
            declared_at = time.monotonic()

            def qwen(kind: str) -> list[dict[str, Any]]:
                return [e for e in seen if e["model"] == "qwen2:0.5b" and e["type"] == kind]

            await h.eventually(lambda: bool(qwen("started")), 2.0, "the pull to start", serve)
            assert qwen("started")[0]["received"] - declared_at < 2.0
            await h.eventually(lambda: bool(qwen("succeeded")), 15, "the pull to succeed", serve)
            kinds = [e["type"] for e in seen if e["model"] == "qwen2:0.5b"]
            assert kinds[0] == "queued"
            assert "progress" in kinds
            assert kinds[-1] == "succeeded"
            assert [e["seq"] for e in seen if e["model"] == "qwen2:0.5b"] == sorted(
                e["seq"] for e in seen if e["model"] == "qwen2:0.5b"
            )
            await client.close()

            await h.declare(postgres_url, more, nats_url=nats_url, prefix=nats_prefix)

            async def ready_in_state() -> bool:
                _, body = await serve.get("/v1/state")
                backends = json.loads(body)["backends"]
                return bool(backends) and len(backends[0]["pulled_models"]) == 2

            await h.eventually(ready_in_state, 5, "/v1/state to show both models", serve)
            _, body = await serve.get("/v1/state")
            (backend,) = json.loads(body)["backends"]
            assert backend["name"] == "edge-1"
            assert backend["phase"] == "Ready"

            samples = await serve.metrics()
            assert samples["llmctl_desired_models"] == 2
            assert samples["llmctl_ready_models"] == 2
            assert samples['llmctl_backends{phase="Ready"}'] == 1
            assert samples['llmctl_backends{phase="Unreachable"}'] == 0
            assert samples["llmctl_cycle_duration_seconds_count"] >= 2
            assert samples["llmctl_pulled_bytes_total"] >= 352e6  # qwen2:0.5b alone is ~352 MB
            assert samples["llmctl_events_published_total"] > 0
            assert "llmctl_events_dropped_total" in samples
            assert samples["llmctl_events_replay_stream"] == 1  # the shared server has JetStream
            assert samples["llmctl_scheduler_running"] == 1
            assert 'llmctl_downloads{state="succeeded"}' in samples
            assert samples.get('llmctl_errors_total{kind="backend_cycle"}', 0) == 0
            assert (await serve.get("/healthz"))[0] == 200

            code, took = await serve.stop(signal.SIGINT)
            assert code == 0, serve.logs()
            assert took < 10
        finally:
            serve.kill()
    assert dict(emu.nodes[0].pulls) == {"all-minilm:latest": 1, "qwen2:0.5b": 1}
    cycles = [line for line in serve.log_lines() if line.get("event") == "backend_cycle"]
    assert cycles, "one canonical JSON line per cycle"
    assert {"cycle", "duration_s", "pulls", "prunes"} <= cycles[0].keys()


async def test_a_cron_expression_schedules_cycles_as_written(
    tmp_path: pathlib.Path, sqlite_url: str, nats_url: str, nats_prefix: str
) -> None:
    received: list[float] = []
    client = await nats.connect(nats_url)

    async def on_cycle(_: Any) -> None:
        received.append(time.time())

    await client.subscribe(f"{nats_prefix}.v1.cycles", cb=on_cycle)
    serve = h.Serve(
        tmp_path, sqlite_url, nats_url, nats_prefix, args=("--cycle-cron", "*/2 * * * * *")
    )
    serve.start()
    try:
        await serve.ready()
        await h.eventually(lambda: len(received) >= 5, 12, "five cycles", serve)
    finally:
        serve.kill()
        await client.close()
    scheduled = received[1:]  # the first is the cycle every start runs
    for at in scheduled:
        assert int(at) % 2 == 0, f"a cycle at {at:.3f} is not on an even second"
        assert at - int(at) < 0.5
    gaps = [b - a for a, b in itertools.pairwise(scheduled)]
    assert all(1.5 < gap < 2.5 for gap in gaps), gaps


async def test_a_second_serve_on_one_sqlite_database_says_it_needs_postgres(
    tmp_path: pathlib.Path, sqlite_url: str, nats_url: str, nats_prefix: str
) -> None:
    first = h.Serve(tmp_path, sqlite_url, nats_url, nats_prefix, name="first").start()
    second = h.Serve(tmp_path, sqlite_url, nats_url, nats_prefix, name="second")
    try:
        await first.ready()
        second.start()
        assert second.proc is not None
        code = await asyncio.to_thread(second.proc.wait, 20)
        assert code == 1
        assert "SQLite supports one replica" in second.logs()
        assert (await first.get("/readyz"))[0] == 200
    finally:
        first.kill()
        second.kill()


async def test_a_cancel_request_stops_only_a_pull_the_database_says_is_cancelled_and_at_once(
    tmp_path: pathlib.Path, postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    # Heartbeats every 5 s and an emulator that sends a progress line only every 30 s: neither a
    # heartbeat nor a progress write can notice a cancel during the test, only the request can.
    quiet = {
        "LLMCTL_HEARTBEAT_S": "5",
        "LLMCTL_LEASE_TTL_S": "60",
        "LLMCTL_READ_TIMEOUT_S": "90",
        "LLMCTL_STALL_TIMEOUT_S": "90",
    }
    client = await nats.connect(nats_url)
    async with ollama.running(pull_rate=1e6, tick_interval=30) as emu:
        text = h.fleet({"edge-1": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"])
        serve = h.Serve(
            tmp_path, postgres_url, nats_url, nats_prefix, args=("--cycle-cron", NEVER), env=quiet
        )
        serve.start()
        try:
            await serve.ready()
            await h.declare(postgres_url, text, nats_url=nats_url, prefix=nats_prefix)

            def pulling() -> bool:
                rows = h.jobs(postgres_url)
                return bool(rows) and rows[0]["status"].startswith("pulling ")

            await h.eventually(pulling, 15, "the pull to reach its first blob", serve)
            (row,) = h.jobs(postgres_url)
            job_id = row["id"]

            def ended() -> list[dict[str, Any]]:
                return [
                    line
                    for line in serve.log_lines()
                    if line.get("event") == "download" and line.get("job_id") == job_id
                ]

            # Anyone can publish this; the job is not cancelled, so nothing stops.
            subject = f"{nats_prefix}.v1.control.cancel"
            await client.publish(subject, json.dumps({"job_id": job_id}).encode())
            await client.flush()
            await asyncio.sleep(2.0)
            (after,) = h.jobs(postgres_url)
            assert ended() == [], "a cancel request for a job nobody cancelled stopped its pull"
            assert (after["state"], after["attempts"], after["lease_owner"]) == (
                "running", 1, row["lease_owner"],
            )  # fmt: skip

            environ = {**serve.environ, "LLMCTL_NATS_URL": nats_url}
            done = await asyncio.to_thread(
                subprocess.run,
                [h.LLMCTL, "downloads", "cancel", job_id],
                env=environ,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            returned = time.monotonic()
            assert done.returncode == 0, done.stderr
            await h.eventually(lambda: bool(ended()), 5, "the pull to stop", serve)
            assert time.monotonic() - returned < 1.5  # not the 5 s heartbeat
            assert [line["outcome"] for line in ended()] == ["cancelled"]
            stopped = [line for line in serve.log_lines() if line.get("job_id") == job_id]
            assert any(line.get("event") == "pull stopped on request" for line in stopped)
            (cancelled,) = h.jobs(postgres_url)
            assert (cancelled["state"], cancelled["lease_owner"]) == ("cancelled", None)
        finally:
            serve.kill()
            await client.close()
