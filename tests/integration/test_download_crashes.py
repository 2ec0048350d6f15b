"""Downloads survive a killed worker, a NATS outage and a database outage: the database stays
the truth."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import structlog

from dwqueue import jobs, publisher
from emulators import ollama
from runtimestate.reconcile import status
from tests import services
from tests.integration.downloads_fixtures import Recorder, World, record

pytestmark = pytest.mark.timeout(120)
S = jobs.JobState


async def test_a_worker_killed_mid_pull_is_finished_by_another_with_one_success_event(
    postgres_url: str, nats_url: str, nats_prefix: str
) -> None:
    import migrations

    migrations.upgrade(postgres_url)
    sink = publisher.Publisher(nats_url, prefix=nats_prefix)
    await sink.start()
    world = World(postgres_url, sink=sink)
    recorded = record(nats_url, nats_prefix)
    recorder: Recorder = await recorded.__anext__()
    worker = None
    try:
        async with ollama.running(pull_rate=30_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            job = await world.enqueue("gpu-1", "qwen2:0.5b")
            worker = subprocess.Popen(  # noqa: ASYNC220 - started once, never awaited on
                [
                    sys.executable,
                    "-m",
                    "tests.integration.download_worker",
                    postgres_url,
                    nats_url,
                    nats_prefix,
                ],
                stdout=subprocess.PIPE,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
            )
            deadline = time.monotonic() + 30
            while (found := await world.job(job.id)).progress.completed in (None, 0):
                assert time.monotonic() < deadline, f"worker never made progress: {found}"
                await asyncio.sleep(0.1)
            assert found.state is S.RUNNING
            victim = found.lease_owner
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            emu.nodes[0].pull_rate = None
            done = await world.until(job.id, S.SUCCEEDED, S.FAILED, within_s=30)
            assert done.state is S.SUCCEEDED, done.error
            assert done.lease_owner != victim
            await sink.flush()
            await asyncio.sleep(0.3)
        assert recorder.types(job.id).count("succeeded") == 1
        assert "retrying" in recorder.types(job.id)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        await recorded.aclose()
        await world.close()
        await sink.close()


async def test_a_nats_outage_mid_pull_loses_no_download_and_events_resume(
    migrated_url: str, fresh_nats_server: services.NatsServer, nats_prefix: str
) -> None:
    sink = publisher.Publisher(fresh_nats_server.url, prefix=nats_prefix, reconnect_wait_s=0.2)
    await sink.start()
    world = World(migrated_url, sink=sink)
    try:
        async with ollama.running(pull_rate=150_000_000) as emu:
            await world.declare("gpu-1", emu.url)
            deadline = time.monotonic() + 10
            while not sink.connected:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            first = await world.enqueue("gpu-1", "qwen2:0.5b")
            await world.until(first.id, S.RUNNING)
            fresh_nats_server.stop()
            done = await world.until(first.id, S.SUCCEEDED, S.FAILED)
            assert done.state is S.SUCCEEDED, done.error
            assert done.progress.completed == done.progress.total
            assert sink.stats.dropped >= 1
            fresh_nats_server.start()
            deadline = time.monotonic() + 15
            while not sink.connected:
                assert time.monotonic() < deadline, "the publisher did not reconnect"
                await asyncio.sleep(0.1)
            recorded = record(fresh_nats_server.url, nats_prefix)
            recorder: Recorder = await recorded.__anext__()
            try:
                second = await world.enqueue("gpu-1", "llama3.2:1b")
                emu.nodes[0].pull_rate = None
                await world.until(second.id, S.SUCCEEDED)
                await sink.flush()
                await asyncio.sleep(0.3)
                assert recorder.types(second.id)[-1] == "succeeded"
            finally:
                await recorded.aclose()
    finally:
        await world.close()
        await sink.close()


@pytest.mark.parametrize("pull_ends_during_outage", [False, True], ids=["mid-pull", "at-the-end"])
async def test_a_database_outage_mid_pull_costs_no_attempt_and_the_success_is_recorded(
    fresh_postgres_server: services.PostgresServer, pull_ends_during_outage: bool
) -> None:
    import migrations

    url = fresh_postgres_server.url
    migrations.upgrade(url)
    world = World(url)
    try:
        with structlog.testing.capture_logs() as logged:
            async with ollama.running(pull_rate=100_000_000) as emu:  # qwen2:0.5b in ~3.5 s
                await world.declare("gpu-1", emu.url)
                job = await world.enqueue("gpu-1", "qwen2:0.5b")
                await world.state.run_download_cycle()
                deadline = time.monotonic() + 20
                while (found := await world.job(job.id)).progress.completed in (None, 0):
                    assert time.monotonic() < deadline, f"no progress: {found}"
                    await asyncio.sleep(0.05)
                fresh_postgres_server.stop()
                if pull_ends_during_outage:
                    for transfer in emu.nodes[0].downloads.values():
                        transfer.rate = None  # the rest arrives at once
                await asyncio.sleep(1.0)  # the pull goes on; progress and heartbeats fail
                fresh_postgres_server.start()
                done = await world.until(job.id, S.SUCCEEDED, S.FAILED, within_s=30)
                installed = {model.spec.name for model in emu.nodes[0].installed.values()}
                pulls = emu.nodes[0].pulls["qwen2:0.5b"]
        managed = await world.tx(status.managed)
    finally:
        await world.close()
    assert done.state is S.SUCCEEDED, done.error
    assert done.attempts == 1  # the outage was the database's, not the download's
    assert pulls == 1  # the pull went on through the outage
    assert "qwen2:0.5b" in installed
    assert ("gpu-1", done.model_key) in managed
    warned = [e for e in logged if e["event"].startswith("database unavailable")]
    if pull_ends_during_outage:  # the success waited for the database
        assert {e.get("during") for e in warned} >= {"success"}
    else:
        assert "database unavailable; progress not recorded" in {e["event"] for e in warned}
    assert warned
    # The driver's one line (connection refused, admin shutdown), never SQL and parameters.
    assert all("\n" not in e["error"] and "[SQL" not in e["error"] for e in warned), warned
