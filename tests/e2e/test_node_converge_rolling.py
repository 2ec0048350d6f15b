"""Rolling restarts through the CLI: a model served by two node agents gets new engine
arguments, and ``reconcile --once`` cycles restart its instances one at a time, never leaving
the model without a ready copy, until both run the new arguments.

Real processes: two ``llmctl node serve`` agents over the emulated Hub, ``llmctl emulate vllm``
as each instance; the database is SQLite and Postgres.
"""

from __future__ import annotations

import itertools
import pathlib
import time
from typing import Any

import pytest

from tests.e2e import node_fleet
from tests.e2e.conftest import Cli

# Real agent processes take seconds per test and what they exercise does not depend on the
# database: run once, on Postgres (the production store), not on SQLite as well.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

MODEL = "org/rolling"
CYCLES_DEADLINE_S = 60.0


def _copies(agents: list[node_fleet.Agent]) -> list[dict[str, Any]]:
    """MODEL's instance on each agent, in agent order."""
    return [agent.instances()[MODEL] for agent in agents]


def _on(copy: dict[str, Any], max_model_len: str) -> bool:
    argv: list[str] = copy["argv"]
    return argv[argv.index("--max-model-len") + 1] == max_model_len


def _roll(llmctl: Cli, agents: list[node_fleet.Agent]) -> list[list[dict[str, Any]]]:
    """Runs ``reconcile --once`` until both copies are ready on 2048; the copies after each."""
    seen = [_copies(agents)]
    deadline = time.monotonic() + CYCLES_DEADLINE_S
    while not all(copy["state"] == "ready" and _on(copy, "2048") for copy in seen[-1]):
        assert time.monotonic() < deadline, node_fleet.rows(seen[-1])
        node_fleet.ok(llmctl, "reconcile", "--once")
        seen.append(_copies(agents))
    return seen


def test_changed_engine_arguments_restart_a_models_copies_one_at_a_time_keeping_one_ready(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_TOKEN", node_fleet.TOKEN)
    with node_fleet.fleet(tmp_path, 2, [MODEL]) as agents:
        node_fleet.ok(llmctl, "pool", "create", "gpus")
        for index, agent in enumerate(agents):
            node_fleet.ok(llmctl, "backend", "add", f"gpu-{index}", "--type", "node", "--url",
                          agent.url, "--api-key-env", "NODE_TOKEN", "--pool", "gpus")  # fmt: skip
        node_fleet.ok(llmctl, "model", "add", MODEL, "--pool", "gpus",
                      "--vllm-max-model-len", "4096")  # fmt: skip
        node_fleet.ok(llmctl, "reconcile", "--once", "--wait", "--timeout", "60")
        node_fleet.ok(llmctl, "model", "update", MODEL, "--vllm-max-model-len", "2048")
        planned = node_fleet.ok(llmctl, "reconcile", "--once", "--dry-run").out
        after_dry_run = _copies(agents)

        seen = _roll(llmctl, agents)
        final = llmctl("reconcile", "--once", "--wait", "--timeout", "60")

    assert "restart instance" in planned, planned
    assert "engine arguments changed" in planned, planned
    assert all(_on(copy, "4096") for copy in after_dry_run)
    assert [copy["pid"] for copy in after_dry_run] == [copy["pid"] for copy in seen[0]]
    for before, after in itertools.pairwise(seen):
        restarted = [b["pid"] != a["pid"] for b, a in zip(before, after, strict=True)]
        assert sum(restarted) <= 1, node_fleet.rows([before, after])
        assert any(copy["state"] == "ready" for copy in after), node_fleet.rows(after)
    assert any(_on(a, "2048") != _on(b, "2048") for a, b in seen)  # one copy went first
    first, last = seen[0], seen[-1]
    assert all(a["pid"] != b["pid"] for a, b in zip(first, last, strict=True))
    assert all(_on(copy, "2048") for copy in last)
    assert final.code == 0, final.out + final.err
