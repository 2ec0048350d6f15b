"""Rolling upgrades on node agents (issue 19) through the CLI: a commit published on the Hub's
``main`` is pulled by each agent, then its instance restarts onto it, one copy at a time and
never leaving the model without a ready copy.

Real processes: two ``llmctl node serve`` agents over the emulated Hub, ``llmctl emulate vllm``
as each instance; Postgres only (the agents are what this exercises).
"""

from __future__ import annotations

import itertools
import pathlib
import time
from typing import Any

import httpx
import pytest

from tests.e2e import node_fleet
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

MODEL = "org/upgraded"
DEADLINE_S = 90.0


ABSENT = {"state": "absent", "pid": None, "path": ""}  # stopped, not started again yet


def _copies(agents: list[node_fleet.Agent]) -> list[dict[str, Any]]:
    """Each agent's copy of the model; one being restarted may be missing: it is out."""
    return [agent.instances().get(MODEL, ABSENT) for agent in agents]


def _on(copy: dict[str, Any], commit: str) -> bool:
    return copy["state"] == "ready" and pathlib.PurePosixPath(copy["path"]).name == commit


CLOSE_S = 0.5  # samples this close cannot hold two restarts one after the other (each >= 1 s)


def test_a_new_hub_commit_rolls_onto_each_agent_one_restart_at_a_time(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_TOKEN", node_fleet.TOKEN)
    with node_fleet.fleet(tmp_path, 2, [MODEL]) as agents:
        monkeypatch.setenv("LLMCTL_HUB_URL", agents[0].hub)
        monkeypatch.setenv("LLMCTL_UPGRADE_CHECK_INTERVAL_S", "0.001")  # every cycle
        node_fleet.ok(llmctl, "pool", "create", "gpus")
        for index, agent in enumerate(agents):
            node_fleet.ok(llmctl, "backend", "add", f"gpu-{index}", "--type", "node", "--url",
                          agent.url, "--api-key-env", "NODE_TOKEN", "--pool", "gpus")  # fmt: skip
        node_fleet.ok(llmctl, "model", "add", MODEL, "--pool", "gpus", "--update-policy", "auto")
        node_fleet.ok(llmctl, "reconcile", "--once", "--wait", "--timeout", "60")
        node_fleet.eventually(
            lambda: all(c["state"] == "ready" for c in _copies(agents)), "both copies ready"
        )
        published = httpx.post(
            f"{agents[0].hub}/_emulator/state",
            json={"publish": {"repo": MODEL, "files": {"model.safetensors": 3 * node_fleet.MIB}}},
        ).json()
        commit = published["nodes"][0]["repos"][MODEL]["branches"]["main"]
        samples = node_fleet.Sampler(lambda: _copies(agents))
        with samples:
            deadline = time.monotonic() + DEADLINE_S
            while not all(_on(copy, commit) for copy in _copies(agents)):
                assert time.monotonic() < deadline, node_fleet.rows(_copies(agents))
                node_fleet.ok(llmctl, "reconcile", "--once", "--wait", "--timeout", "60")
        seen = samples.seen
    for copies in seen:  # at most one copy out at a time, and one always ready
        assert sum(copy["state"] != "ready" for copy in copies) <= 1, node_fleet.rows(copies)
    steps = zip(itertools.pairwise(seen), itertools.pairwise(samples.at), strict=True)
    for (before, after), (then, now) in steps:
        if now - then > CLOSE_S:  # the sampler was starved: both may have rolled meanwhile
            continue
        restarted = [b["pid"] != a["pid"] for b, a in zip(before, after, strict=True)]
        assert sum(restarted) <= 1, node_fleet.rows([before, after])
    pids = [{c[i]["pid"] for c in seen} - {None} for i in range(2)]
    assert [len(p) for p in pids] == [2, 2]  # one restart each
    assert all(_on(copy, commit) for copy in seen[-1])
