"""Two replicas running the backend cycle at once on one Postgres: their summaries add up to what
really happened. A pull is counted by the replica whose insert created the job; a prune the other
replica's lock held back is a skip (`skipped_locked`, one debug line), not a failed action."""

from __future__ import annotations

import asyncio

import pytest
import structlog

import migrations
from dwqueue import queue
from emulators import faults, ollama
from runtimestate.reconcile import steps
from tests.integration.cycle_fixtures import Fleet, fleet_file, installed

pytestmark = pytest.mark.timeout(120)
MODELS = ["all-minilm", "smollm2:135m", "qwen2:0.5b"]


async def test_two_replicas_count_each_pull_once_and_a_prune_held_by_the_others_lock_as_a_skip(
    postgres_url: str,
) -> None:
    migrations.upgrade(postgres_url)
    replicas = [Fleet(postgres_url), Fleet(postgres_url)]
    try:
        async with ollama.running(nodes=2, installed=["tinyllama"]) as emu:
            backends = {f"edge-{i}": ("ollama", emu.node_url(i), "all") for i in range(2)}
            await replicas[0].apply(fleet_file(backends, MODELS))
            # Slow listings: both replicas read the jobs before either queues a pull. Slow
            # deletes: each backend's lock is held while the other replica reaches it.
            emu.set_fault(faults.Fault(faults.FaultKind.LATENCY, latency=0.5), "/api/tags")
            emu.set_fault(faults.Fault(faults.FaultKind.LATENCY, latency=0.8), "/api/delete")
            with structlog.testing.capture_logs() as logged:
                reports = await asyncio.gather(
                    *(replica.state.run_backend_cycle() for replica in replicas)
                )
            left = [installed(emu, i) for i in range(2)]
            deletes = [emu.nodes[i].requests["DELETE /api/delete"] for i in range(2)]
        queued = await replicas[0].tx(queue.list_jobs)
    finally:
        for replica in replicas:
            await replica.close()
    summaries = [report.summary() for report in reports]
    assert [len(report.plan.of(steps.Pull)) for report in reports] == [6, 6]  # both planned all
    assert len(queued) == 6
    assert sum(s["pulls"] for s in summaries) == 6, summaries
    assert [s["failed_actions"] for s in summaries] == [0, 0], summaries
    assert sum(s["skipped_locked"] for s in summaries) == 2, summaries  # one per backend
    assert deletes == [1, 1]
    assert all("tinyllama:latest" not in models for models in left)
    skipped = [e for e in logged if e["event"].startswith("backend cycle: actions skipped")]
    assert sorted(e["backend"] for e in skipped) == ["edge-0", "edge-1"]
    assert {e["log_level"] for e in skipped} == {"debug"}
