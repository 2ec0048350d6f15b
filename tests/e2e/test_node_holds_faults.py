"""Faults and refusals on a node backend, end to end: a download cancelled mid-pull, an agent
declared with a wrong token or none, and an instance whose command exits at once.

Each test runs a real ``llmctl node serve`` over the emulated Hub (the emulated vLLM server as
its instance command) and drives it through the CLI as an operator does.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.e2e import node_holds_fixtures as fx
from tests.e2e.conftest import Cli

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")


def _job(fleet: fx.Fleet) -> dict[str, object]:
    jobs = fleet.downloads()
    assert len(jobs) == 1, jobs
    return dict(jobs[0])


def _pulling(fleet: fx.Fleet) -> dict[str, object] | None:
    """The one download once it runs and has made progress, else None."""
    jobs = fleet.downloads()
    if jobs and jobs[0]["state"] == "running" and (jobs[0]["completed"] or 0) > 0:
        return dict(jobs[0])
    return None


def test_a_cancelled_node_pull_stops_the_agents_download_and_a_retry_completes_it(
    llmctl: Cli,
    database_url: str,
    nats_url: str,
    nats_prefix: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client reports progress per 10 MiB written: the first comes after 2.5 s at 4 MiB/s,
    # the whole file would take 16 s.
    size = 64 * fx.MIB
    repos = [fx.repo("org/slow", size=size)]
    nats_args = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    with fx.fleet(llmctl, tmp_path, monkeypatch, repos, pull_rate=4 * fx.MIB) as fleet:
        fleet.declare("org/slow")
        argv = [LLMCTL, "--database-url", database_url, *nats_args]
        waiting = subprocess.Popen(
            [*argv, "reconcile", "--once", "--wait", "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )  # fmt: skip
        try:
            job = fx.eventually(lambda: _pulling(fleet), "the pull to make progress")
            cancelled = fleet.ok(*nats_args, "downloads", "cancel", str(job["id"]))
            out, err = waiting.communicate(timeout=30)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        gone = fx.eventually(
            lambda: [d for d in fleet.hub.downloads if d.path == "model.safetensors"],
            "the hub to see the file's GET end",
            seconds=5,
        )
        ended = _job(fleet)
        listed = fleet.ok("downloads", "list").out
        fleet.hub.pull_rate = None
        fleet.ok(*nats_args, "downloads", "retry", str(job["id"]))
        done = fleet.ok("reconcile", "--once", "--wait", "--timeout", "60")
        final = _job(fleet)
        doc = fleet.backend()

    assert job["id"] in cancelled.out, cancelled.out
    assert waiting.returncode == 1, out + err  # the cancelled download is not converged
    assert ended["state"] == "cancelled", ended
    assert "cancelled" in listed, listed
    assert [d.outcome for d in gone] == ["client gone"], gone
    assert gone[0].sent < size / 2, gone
    assert "converged" in done.out, done.out
    assert (final["id"], final["state"]) == (job["id"], "succeeded"), final
    assert [i["state"] for i in doc["status"]["instances"]] == ["ready"], doc
