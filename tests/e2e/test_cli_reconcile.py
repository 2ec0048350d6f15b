"""``llmctl reconcile --once`` as cron jobs and scripts use it: plan, act, exit code."""

from __future__ import annotations

import pathlib

from emulators import ollama, vllm
from tests.e2e.conftest import Cli, dump

FLEET = """
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-0}}
spec: {{type: ollama, url: "{url0}"}}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-1}}
spec: {{type: ollama, url: "{url1}", maxPulls: 2}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "qwen2:0.5b"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "llama3.2:1b"}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: main}}
spec: {{backends: [gpu-0, gpu-1], models: ["qwen2:0.5b", "llama3.2:1b"]}}
"""


def _apply(llmctl: Cli, tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    result = llmctl("apply", "-f", str(path))
    assert result.code == 0, result.err


def test_reconcile_wait_converges_a_fleet_and_exits_0(
    llmctl: Cli, tmp_path: pathlib.Path, database_url: str
) -> None:
    with ollama.in_thread(nodes=2, installed=["qwen2:0.5b"]) as emu:
        _apply(llmctl, tmp_path, FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1)))
        before = dump(database_url)
        dry = llmctl("reconcile", "--once", "--dry-run")
        assert dry.code == 0, dry.err
        assert "pull llama3.2:1b on gpu-0" in dry.out
        assert dump(database_url) == before
        assert emu.nodes[0].requests["POST /api/pull"] == 0
        done = llmctl("reconcile", "--once", "--wait", "--timeout", "60", "-o", "json")
        assert done.code == 0, done.out + done.err
        doc = done.json()
        assert doc["converged"] is True
        for node in range(2):
            assert {m.spec.name for m in emu.nodes[node].installed.values()} == {
                "qwen2:0.5b",
                "llama3.2:1b",
            }
        listed = {b["name"]: b["status"] for b in llmctl("backend", "list", "-o", "json").json()}
        assert listed["gpu-0"]["phase"] == "Ready"
        assert (listed["gpu-0"]["ready"], listed["gpu-0"]["desired"]) == (2, 2)
        table = llmctl("backend", "list").out
        assert "Ready" in table
        assert "2/2" in table
        got = llmctl("backend", "get", "gpu-1").out
        assert "ModelsReady" in got
        assert "llama3.2:1b" in got


def test_reconcile_wait_exits_1_when_a_backend_cannot_converge(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with vllm.in_thread(served_model_names=["other"]) as emu:
        text = (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: vllm-0}\n"
            f'spec: {{type: vllm, url: "{emu.url}"}}\n---\n'
            "apiVersion: llmctl/v1\nkind: Model\nmetadata: {name: wanted}\n---\n"
            "apiVersion: llmctl/v1\nkind: Pool\nmetadata: {name: p}\n"
            "spec: {backends: [vllm-0], models: [wanted]}\n"
        )
        _apply(llmctl, tmp_path, text)
        result = llmctl("reconcile", "--once", "--wait", "--timeout", "20")
        assert result.code == 1
        assert "drift on vllm-0: wanted declared not served" in result.out
        assert "not converged" in result.out


def test_reconcile_without_once_is_refused(llmctl: Cli) -> None:
    result = llmctl("reconcile")
    assert result.code == 2
    assert "give --once" in result.err
