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

# Real agent processes take seconds per test and what they exercise does not depend on the
# database: run once, on Postgres (the production store), not on SQLite as well.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

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


@pytest.mark.parametrize("credential", ["wrong", "none"])
def test_a_node_backend_with_a_wrong_token_or_none_is_unauthorized_and_no_token_is_shown(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    wrong = "wrong-t0ken-also-secret"
    with fx.fleet(llmctl, tmp_path, monkeypatch, [fx.repo("org/tiny")]) as fleet:
        monkeypatch.setenv("WRONG_TOKEN", wrong)
        declared = ["--api-key-env", "WRONG_TOKEN"] if credential == "wrong" else []
        fleet.ok("backend", "add", "gpu-1", "--type", "node", "--url", fleet.agent_url, *declared)
        fleet.ok("model", "add", "org/tiny")
        results = [
            fleet.llmctl("reconcile", "--once"),
            fleet.llmctl("reconcile", "--once", "-o", "json"),
            fleet.llmctl("backend", "get", "gpu-1"),
            fleet.llmctl("backend", "get", "gpu-1", "-o", "json"),
            fleet.llmctl("backend", "list", "-o", "yaml"),
            fleet.llmctl("downloads", "list", "-o", "json"),
        ]
        doc = fleet.backend()

    assert all(r.code == 0 for r in results), results
    status = doc["status"]
    assert status["phase"] == "Unreachable", status
    reachable = next(c for c in status["conditions"] if c["type"] == "Reachable")
    assert (reachable["status"], reachable["reason"]) == (False, "unauthorized"), reachable
    fix = "llmctl backend update gpu-1 --api-key-env"
    assert fix in reachable["message"], reachable
    assert fix in results[0].out, results[0].out  # reconcile's table
    assert fix in results[2].out, results[2].out  # backend get's table
    shown = "".join(r.out + r.err for r in results)
    assert fx.TOKEN not in shown
    assert wrong not in shown


# The emulated vLLM server, except for org/bad: that one prints an error and exits at once.
FAILING = (
    'sh -c \'if [ "$8" = org/bad ]; then echo "CUDA error: no kernel image for org/bad" >&2; '
    'exit 3; fi; exec "$0" "$@"\' '
    f"{LLMCTL} emulate vllm --host {{host}} --port {{port}} --served-model-name {{name}} "
    "--model {path}"
)


def _crash_looping(fleet: fx.Fleet) -> dict[str, object] | None:
    fleet.ok("reconcile", "--once")
    doc = fleet.backend()
    states = {i["name"]: i["state"] for i in doc["status"]["instances"]}
    return doc if states.get("org/bad") == "CrashLoopBackOff" else None


def test_an_instance_whose_command_exits_at_once_is_shown_in_crash_loop_with_its_log_tail(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos = [fx.repo("org/good"), fx.repo("org/bad")]
    with fx.fleet(llmctl, tmp_path, monkeypatch, repos, gpus="2x24GiB", command=FAILING) as fleet:
        fleet.declare("org/good", "org/bad")
        fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        doc = fx.eventually(lambda: _crash_looping(fleet), "org/bad to crash-loop")
        table = fleet.ok("backend", "get", "gpu-1").out

    status = doc["status"]
    bad = next(i for i in status["instances"] if i["name"] == "org/bad")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert "CUDA error: no kernel image for org/bad" in bad["logTail"], bad
    assert bad["restarts"] >= 2, bad
    assert conditions["InstancesReady"]["status"] is False, conditions
    instances = conditions["InstancesReady"]["message"]
    assert "org/bad: CrashLoopBackOff (the process exited with code 3" in instances, instances
    assert "its log ends: CUDA error: no kernel image for org/bad" in instances, instances
    assert "org/good: ready" in instances, instances
    models = conditions["ModelsReady"]
    assert (models["status"], models["reason"]) == (False, "instances_not_ready"), models
    assert "org/bad" in models["message"], models
    assert (status["ready"], status["desired"]) == (1, 2), status  # org/good only
    assert "CrashLoopBackOff" in table, table
    assert "ready: 1/2" in table, table
