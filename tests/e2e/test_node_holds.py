"""Holds on a node backend, end to end: a real ``llmctl node serve`` over the emulated Hub with
the emulated vLLM server as its instance command, declared and reconciled through the CLI.

A model that cannot be placed (no free GPU) waits with the numbers in its condition and starts
once the GPU is freed; weights that cannot fit on the node's disk are not queued: held as drift
with the numbers (admission, issue 16).
"""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest

from emulators import hfhub
from runtimestate.reconcile import admission
from tests.e2e import node_holds_fixtures as fx
from tests.e2e.conftest import Cli

# Real agent processes take seconds per test and what they exercise does not depend on the
# database: run once, on Postgres (the production store), not on SQLite as well.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def _instances(fleet: fx.Fleet) -> dict[str, str]:
    return {i["name"]: i["state"] for i in fleet.backend()["status"]["instances"]}


def test_a_second_model_on_a_one_gpu_node_is_held_until_the_first_leaves_its_pool(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos = [fx.repo("org/alpha"), fx.repo("org/beta")]
    with fx.fleet(llmctl, tmp_path, monkeypatch, repos, gpus="1x24GiB") as fleet:
        fleet.declare("org/alpha", "org/beta")
        fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")

        running = _instances(fleet)
        conditions = fleet.backend()["status"]["conditions"]
        planned = fleet.ok("reconcile", "--once", "--dry-run").out
        fleet.ok("pool", "remove-model", "default", "org/alpha")
        fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        after = _instances(fleet)

    assert running == {"org/alpha": "ready"}, running
    ready = next(c for c in conditions if c["type"] == "InstancesReady")
    assert "org/beta: unplaceable: needs 1 GPU, 0 free" in ready["message"], ready
    assert "org/beta" in planned, planned
    assert "needs 1 GPU, 0 free" in planned, planned
    assert after == {"org/beta": "ready"}, after


def test_weights_larger_than_the_nodes_free_disk_are_held_with_the_numbers_and_never_queued(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = shutil.disk_usage(tmp_path).free
    repos = [fx.repo("org/huge", size=free + 2**40)]
    with fx.fleet(llmctl, tmp_path, monkeypatch, repos) as fleet:
        fleet.declare("org/huge")
        waited = fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        planned = fleet.ok("reconcile", "--once", "--dry-run").out
        again = [fleet.llmctl("reconcile", "--once") for _ in range(2)]
        status = fleet.backend()["status"]
        printed = fleet.ok("backend", "get", "gpu-1").out
        later = fleet.downloads()
        sent = list(fleet.hub.downloads)
        cached = sorted(
            str(p.relative_to(fleet.cache)) for p in fleet.cache.rglob("*") if p.is_file()
        )

    needs = admission.human(free + 2**40 + len(b"{}"))
    assert waited.code == 1, waited.out + waited.err
    shown = re.search(
        r"org/huge declared not served \(needs (.+?), (.+?) free of (.+?);", waited.out
    )
    assert shown is not None, waited.out
    assert shown[1] == needs, waited.out
    assert f"needs {needs}" in planned, planned
    assert "insufficient_capacity" in str(status["conditions"]), status
    disk = status["disk"]
    assert disk["source"] == "reported", disk
    assert 0 < disk["free"] <= disk["total"]
    assert disk["used"] == disk["total"] - disk["free"]
    assert re.search(r"disk: +\S+ \S*B free of \S+ \S*B \(reported\), \S+ \S*B used", printed), (
        printed
    )
    assert all(r.code == 0 for r in again)
    assert later == []  # never queued, so never failed halfway
    assert sent == []  # the hub saw no file GET
    assert cached == []


def test_a_hub_5xx_and_a_cut_mid_file_are_retried_and_the_pull_succeeds(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 3 * fx.MIB
    with fx.fleet(llmctl, tmp_path, monkeypatch, [fx.repo("org/flaky", size=size)]) as fleet:
        fleet.hub.download_faults = [
            hfhub.DownloadFault("model.safetensors", after_bytes=fx.MIB),
            hfhub.DownloadFault("model.safetensors", status=503),
        ]
        fleet.declare("org/flaky")
        waited = fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        jobs = fleet.downloads()
        gets = [(d.path, d.outcome) for d in fleet.hub.downloads]
        states = _instances(fleet)

    assert waited.code == 0, waited.out + waited.err
    assert [(j["model"], j["state"]) for j in jobs] == [("org/flaky", "succeeded")], jobs
    assert ("model.safetensors", "reset") in gets
    assert ("model.safetensors", "status 503") in gets
    assert gets[-1] == ("model.safetensors", "complete"), gets
    assert states == {"org/flaky": "ready"}, states


@pytest.mark.parametrize(
    ("repos", "hf_token", "reason"),
    [
        ([], "hf_reader", "org/closed@main: Repository not found"),
        ([fx.repo("org/closed", private=True)], None, "org/closed@main: Repository not found"),
        ([fx.repo("org/closed", gated=True)], None, "Access to model org/closed is restricted"),
    ],
    ids=["missing-404", "private-401", "gated-401"],
)
def test_a_missing_private_or_gated_repo_fails_permanently_with_the_hubs_reason_and_is_held(
    llmctl: Cli,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    repos: list[hfhub.RepoSpec],
    hf_token: str | None,
    reason: str,
) -> None:
    with fx.fleet(llmctl, tmp_path, monkeypatch, repos, hf_token=hf_token) as fleet:
        fleet.declare("org/closed")
        waited = fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        first = fleet.downloads()
        listed = fleet.ok("downloads", "list").out
        again = [fleet.llmctl("reconcile", "--once") for _ in range(2)]
        later = fleet.downloads()
        doc = fleet.backend()
        shown = fleet.ok("backend", "get", "gpu-1").out

    assert waited.code == 1, waited.out + waited.err
    assert [(j["model"], j["state"], j["errorClass"]) for j in first] == [
        ("org/closed", "failed", "permanent")
    ], first
    assert first[0]["attempts"] == 1, first
    assert reason in first[0]["error"], first
    assert reason in listed, listed
    assert "hold org/closed" in waited.out, waited.out
    assert all(r.code == 0 for r in again)
    assert [(j["id"], j["attempts"]) for j in later] == [(first[0]["id"], 1)], later
    held = doc["status"]["downloads"]["held"]
    assert [h["id"] for h in held] == [first[0]["id"]], held
    assert reason in held[0]["error"], held
    assert reason in shown, shown
    # Files a refused pull left behind (a gated repo's config.json) are not weights to serve.
    assert (doc["status"]["models"], doc["status"]["instances"]) == ([], []), doc
    assert doc["status"]["ready"] == 0, doc
