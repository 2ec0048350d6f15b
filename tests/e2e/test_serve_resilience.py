"""``llmctl serve`` staying up and stopping cleanly: SIGTERM mid-pull, two replicas on one
Postgres, Postgres restarted and NATS stopped under a running serve."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import nats

from emulators import faults, ollama
from tests import services
from tests.e2e import serve_harness as h


def _job(url: str, model: str) -> dict[str, Any] | None:
    found = [j for j in h.jobs(url) if j["model"] == model]
    assert len(found) <= 1, found
    return found[0] if found else None


async def test_sigterm_mid_pull_exits_0_and_a_second_serve_finishes_the_job(
    tmp_path: pathlib.Path, postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    async with ollama.running(pull_rate=40e6) as emu:  # qwen2:0.5b takes ~9 s
        first = h.Serve(tmp_path, postgres_url, nats_url, nats_prefix, name="first").start()
        try:
            await first.ready()
            text = h.fleet({"edge-1": ("ollama", emu.url, "managed")}, ["qwen2:0.5b"])
            await h.declare(postgres_url, text, nats_url=nats_url, prefix=nats_prefix)

            def pulling() -> bool:
                job = _job(postgres_url, "qwen2:0.5b")
                return job is not None and job["state"] == "running" and (job["completed"] or 0) > 0

            await h.eventually(pulling, 10, "the pull to make progress", first)
            code, took = await first.stop()
            assert code == 0, first.logs()
            assert took < 10
        finally:
            first.kill()
        job = _job(postgres_url, "qwen2:0.5b")
        assert job is not None
        assert job["state"] == "queued"
        assert job["lease_owner"] is None
        assert (job["completed"] or 0) > 0  # progress kept
        assert job["attempts"] == 0  # a clean stop does not use up an attempt

        second = h.Serve(tmp_path, postgres_url, nats_url, nats_prefix, name="second").start()
        try:
            await second.ready()

            def done() -> bool:
                finished = _job(postgres_url, "qwen2:0.5b")
                return finished is not None and finished["state"] == "succeeded"

            await h.eventually(done, 20, "the second serve to finish the job", second)
            assert "qwen2:0.5b" in h.installed(emu.nodes[0])
            code, _ = await second.stop()
            assert code == 0
        finally:
            second.kill()


async def test_two_replicas_on_one_postgres_never_pull_twice_or_prune_one_backend_together(
    tmp_path: pathlib.Path, postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    models = ["all-minilm", "smollm2:135m", "qwen2:0.5b"]
    async with ollama.running(nodes=2, pull_rate=300e6, installed=["tinyllama"]) as emu:
        # A slow delete: without the advisory lock the other replica deletes meanwhile too.
        emu.set_fault(faults.Fault(faults.FaultKind.LATENCY, latency=1.5), "/api/delete")
        text = h.fleet(
            {
                "edge-1": ("ollama", emu.node_url(0), "all"),
                "edge-2": ("ollama", emu.node_url(1), "all"),
            },
            models,
        )
        replicas = [
            h.Serve(tmp_path, postgres_url, nats_url, nats_prefix, name=f"replica-{i}")
            for i in (1, 2)
        ]
        try:
            replicas[0].start()
            await replicas[0].ready()  # migrates first; the other starts on a current schema
            replicas[1].start()
            await replicas[1].ready()
            await h.declare(postgres_url, text, nats_url=nats_url, prefix=nats_prefix)
            wanted = {"all-minilm:latest", "smollm2:135m", "qwen2:0.5b"}

            def converged() -> bool:
                return all(h.installed(node) == wanted for node in emu.nodes)

            await h.eventually(converged, 30, "both nodes to converge", replicas[0])
            await h.eventually(lambda: not any(n.downloads for n in emu.nodes), 5, "idle nodes")
            for _ in range(3):  # a few more cycles on each replica, to catch a late duplicate
                await h.declare(postgres_url, text, nats_url=nats_url, prefix=nats_prefix)
            nodes = await h.emulator_state(emu.url)
            for node in nodes:
                assert node["pulls"] == dict.fromkeys(wanted, 1), node["pulls"]
                assert node["requests"].get("DELETE /api/delete") == 1, node["requests"]
            owners = {j["lease_owner"] for j in h.jobs(postgres_url)}
            assert owners == {None}
            logs = replicas[0].logs() + replicas[1].logs()
            assert "Traceback" not in logs
        finally:
            for replica in replicas:
                replica.kill()


async def test_serve_recovers_when_postgres_restarts_and_readyz_reports_the_outage(
    tmp_path: pathlib.Path, fresh_postgres_server: services.PostgresServer, nats_url: str,
    nats_prefix: str,
) -> None:  # fmt: skip
    url = fresh_postgres_server.url
    async with ollama.running(pull_rate=300e6) as emu:
        serve = h.Serve(tmp_path, url, nats_url, nats_prefix).start()
        try:
            await serve.ready()
            text = h.fleet({"edge-1": ("ollama", emu.url, "managed")}, ["all-minilm"])
            await h.declare(url, text, nats_url=nats_url, prefix=nats_prefix)
            await h.eventually(lambda: len(h.installed(emu.nodes[0])) == 1, 10, "a pull", serve)

            fresh_postgres_server.stop()

            async def unready() -> bool:
                status, body = await serve.get("/readyz")
                return status == 503 and json.loads(body)["checks"]["database"] is not None

            await h.eventually(unready, 5, "/readyz to report the database", serve)
            assert (await serve.get("/healthz"))[0] == 200

            async def failing() -> bool:
                errors = (await serve.metrics()).get('llmctl_errors_total{kind="backend_cycle"}')
                return bool(errors)

            await h.eventually(failing, 5, "a failed cycle to be counted", serve)
            fresh_postgres_server.start()
            more = h.fleet(
                {"edge-1": ("ollama", emu.url, "managed")}, ["all-minilm", "smollm2:135m"]
            )
            await h.declare(url, more)  # no trigger: the schedule must pick it up

            def converged() -> bool:
                return h.installed(emu.nodes[0]) == {"all-minilm:latest", "smollm2:135m"}

            await h.eventually(converged, 25, "convergence after the restart", serve)
            assert (await serve.get("/readyz"))[0] == 200
            assert serve.proc is not None
            assert serve.proc.poll() is None  # the same process all along
            code, _ = await serve.stop()
            assert code == 0
        finally:
            serve.kill()


async def test_cycles_and_downloads_go_on_while_nats_is_down_and_events_resume_after(
    tmp_path: pathlib.Path, postgres_url: str, fresh_nats_server: services.NatsServer,
    nats_prefix: str,
) -> None:  # fmt: skip
    nats_url = fresh_nats_server.url
    async with ollama.running(pull_rate=300e6) as emu:
        serve = h.Serve(tmp_path, postgres_url, nats_url, nats_prefix).start()
        try:
            await serve.ready()
            fresh_nats_server.stop()
            text = h.fleet({"edge-1": ("ollama", emu.url, "managed")}, ["all-minilm"])
            await h.declare(postgres_url, text)
            await h.eventually(
                lambda: len(h.installed(emu.nodes[0])) == 1, 10, "a pull without NATS", serve
            )
            assert (await serve.metrics())["llmctl_events_dropped_total"] > 0
            assert (await serve.get("/readyz"))[0] == 200  # NATS is not needed to be useful

            fresh_nats_server.start()
            seen: list[dict[str, Any]] = []
            client = await nats.connect(nats_url)

            async def on_event(msg: Any) -> None:
                seen.append(json.loads(msg.data))

            await client.subscribe(f"{nats_prefix}.v1.downloads.>", cb=on_event)
            more = h.fleet(
                {"edge-1": ("ollama", emu.url, "managed")}, ["all-minilm", "smollm2:135m"]
            )
            await h.declare(postgres_url, more)

            def succeeded() -> bool:
                return any(e["model"] == "smollm2:135m" and e["type"] == "succeeded" for e in seen)

            await h.eventually(succeeded, 15, "events after NATS came back", serve)
            await client.close()
            code, _ = await serve.stop()
            assert code == 0
        finally:
            serve.kill()
