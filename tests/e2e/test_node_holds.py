"""Holds on a node backend, end to end: a real ``llmctl node serve`` over the emulated Hub with
the emulated vLLM server as its instance command, declared and reconciled through the CLI.

A model that cannot be placed (no free GPU) waits with the numbers in its condition and starts
once the GPU is freed; weights that cannot fit on the node's disk are refused before the first
byte and held, not retried.
"""

from __future__ import annotations

import pathlib
import re

import shutil

import pytest

from tests.e2e import node_holds_fixtures as fx
from tests.e2e.conftest import Cli


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
    assert "org/beta" in ready["message"] and "needs 1 GPU, 0 free" in ready["message"], ready
    assert "org/beta" in planned and "needs 1 GPU, 0 free" in planned, planned
    assert after == {"org/beta": "ready"}, after


def test_weights_larger_than_the_nodes_free_disk_are_held_before_any_byte_is_written(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = shutil.disk_usage(tmp_path).free
    repos = [fx.repo("org/huge", size=free + 2**40)]
    with fx.fleet(llmctl, tmp_path, monkeypatch, repos) as fleet:
        fleet.declare("org/huge")
        waited = fleet.llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        first = fleet.downloads()
        listed = fleet.ok("downloads", "list").out
        again = [fleet.llmctl("reconcile", "--once") for _ in range(2)]
        later = fleet.downloads()
        sent = list(fleet.hub.downloads)
        cached = sorted(
            str(p.relative_to(fleet.cache)) for p in fleet.cache.rglob("*") if p.is_file()
        )

    assert waited.code == 1, waited.out + waited.err
    assert "hold org/huge" in waited.out and "(insufficient_disk)" in waited.out, waited.out
    assert [(j["model"], j["state"]) for j in first] == [("org/huge", "failed")], first
    assert first[0]["errorClass"] == "insufficient_disk", first
    shown = re.search(r"needs (\d+) more bytes on disk, (\d+) are free", listed)
    assert shown is not None, listed
    assert int(shown[1]) == free + 2**40 + len(b"{}") and int(shown[2]) < int(shown[1]), listed
    assert sent == [] and cached == [], (sent, cached)
    assert all(r.code == 0 for r in again)
    assert [j["id"] for j in later] == [first[0]["id"]], later
    assert later[0]["attempts"] == first[0]["attempts"], later
