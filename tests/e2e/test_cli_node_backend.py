"""A node backend through the CLI: declared with ``--type node`` and the agent's token, observed
by ``reconcile --once`` against a real agent, shown by ``backend get`` with its instances, and
routed to by ``resolve`` at its instance's URL (never the agent's own).

The instance is started through the agent's API here, as the planner would start it."""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulators import hfhub
from tests.e2e.conftest import Cli
from tests.integration import node_agent_process

TOKEN = "node-cli-t0ken-secret"
MIB = 1024 * 1024


@pytest.fixture
def agent(tmp_path: pathlib.Path) -> Iterator[httpx.Client]:
    repos = [hfhub.RepoSpec("org/tiny", {"config.json": b"{}", "model.safetensors": MIB})]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(hfhub.in_thread(repos=repos))
        url = stack.enter_context(node_agent_process.running(tmp_path / "data", hub.url, TOKEN))
        yield stack.enter_context(httpx.Client(base_url=url, headers=auth, timeout=30))


def _ok(llmctl: Cli, *args: str) -> Any:
    result = llmctl(*args)
    assert result.code == 0, result.out + result.err
    return result


def _serving(agent: httpx.Client) -> str:
    """Pulls org/tiny and starts its instance through the agent; its base URL once ready."""
    pulled = agent.post("/v1/weights/pull", json={"source": "org/tiny"})
    assert json.loads(pulled.text.splitlines()[-1])["status"] == "success"
    assert agent.put("/v1/instances/org/tiny", json={"weights": "org/tiny"}).status_code == 201
    deadline = time.monotonic() + 30
    while (shown := agent.get("/v1/instances/org/tiny").json())["state"] != "ready":
        assert time.monotonic() < deadline, shown
        time.sleep(0.02)
    return str(shown["base_url"])


def test_a_node_backend_is_observed_shows_its_instances_and_resolves_to_the_instance(
    llmctl: Cli, agent: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_TOKEN", TOKEN)
    root = str(agent.base_url).rstrip("/")
    _ok(llmctl, "backend", "add", "gpu-7", "--type", "node", "--url", f"{root}/v1",
        "--api-key-env", "NODE_TOKEN", "--no-pool")  # fmt: skip
    served_at = _serving(agent)
    _ok(llmctl, "reconcile", "--once")

    doc = _ok(llmctl, "backend", "get", "gpu-7", "-o", "json").json()
    table = _ok(llmctl, "backend", "get", "gpu-7").out
    chosen = _ok(llmctl, "resolve", "org/tiny", "-o", "json").json()
    shown = _ok(llmctl, "resolve", "org/tiny").out

    assert doc["url"] == root
    assert doc["status"]["phase"] == "Ready"
    assert doc["status"]["instances"] == [
        {"name": "org/tiny", "state": "ready", "baseUrl": served_at, "gpus": [0],
         "restarts": 0, "lastError": None, "logTail": []},
    ]  # fmt: skip
    assert [(m["name"], m["baseUrl"]) for m in doc["status"]["models"]] == [("org/tiny", served_at)]
    assert "INSTANCE" in table
    assert served_at in table
    assert chosen["provider"]["backend"] == "gpu-7"
    assert chosen["provider"]["baseUrl"] == served_at
    assert served_at in shown
    assert TOKEN not in table + shown


def test_weights_on_a_node_without_a_ready_instance_are_not_resolvable(
    llmctl: Cli, agent: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_TOKEN", TOKEN)
    root = str(agent.base_url).rstrip("/")
    _ok(llmctl, "backend", "add", "gpu-7", "--type", "node", "--url", root,
        "--api-key-env", "NODE_TOKEN", "--no-pool")  # fmt: skip
    _serving(agent)
    assert agent.delete("/v1/instances/org/tiny").status_code == 200
    _ok(llmctl, "reconcile", "--once")

    doc = _ok(llmctl, "backend", "get", "gpu-7", "-o", "json").json()
    refused = llmctl("resolve", "org/tiny")

    assert [(m["name"], m["baseUrl"]) for m in doc["status"]["models"]] == [("org/tiny", None)]
    assert doc["status"]["instances"] == []
    assert refused.code == 1, refused.out + refused.err


def test_backend_add_help_lists_node_and_a_file_declares_one_at_the_agents_root(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: gpu-7}\n"
        'spec: {type: node, url: "http://10.0.0.7:8700/v1/"}\n'
    )

    helped = _ok(llmctl, "backend", "add", "--help").out
    _ok(llmctl, "apply", "-f", str(path))
    doc = _ok(llmctl, "backend", "get", "gpu-7", "-o", "json").json()
    again = _ok(llmctl, "apply", "-f", str(path)).out

    assert "node" in helped
    assert (doc["type"], doc["url"]) == ("node", "http://10.0.0.7:8700")
    assert "unchanged" in again
