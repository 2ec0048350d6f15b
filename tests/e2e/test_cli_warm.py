"""Warm models through the CLI (issue 16): ``reconcile --dry-run`` lists the preloads it would
send with their reasons and sends none; ``reconcile --once`` sends them. The model is declared
warm with ``model update --warm``."""

from __future__ import annotations

import pathlib

from emulators import ollama
from tests.e2e.conftest import Cli, dump

QWEN = "qwen2:0.5b"
FLEET = """
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-0}}
spec: {{type: ollama, url: "{url}"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "qwen2:0.5b"}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: main}}
spec: {{backends: [gpu-0], models: ["qwen2:0.5b"]}}
"""


def test_reconcile_dry_run_lists_preloads_with_their_reasons_and_sends_none(
    llmctl: Cli, tmp_path: pathlib.Path, database_url: str
) -> None:
    with ollama.in_thread(installed=[QWEN]) as emu:
        path = tmp_path / "fleet.yaml"
        path.write_text(FLEET.format(url=emu.node_url(0)))
        assert llmctl("apply", "-f", str(path)).code == 0
        warmed = llmctl("model", "update", QWEN, "--warm")
        assert warmed.code == 0, warmed.err
        before = dump(database_url)
        dry = llmctl("reconcile", "--once", "--dry-run")
        assert dry.code == 0, dry.err
        expected = f"preload {QWEN} on gpu-0 (keep_alive -1): declared warm; installed, not loaded"
        assert expected in dry.out
        assert dump(database_url) == before
        assert emu.nodes[0].preloads[QWEN] == 0
        done = llmctl("reconcile", "--once", "-o", "json")
        assert done.code == 0, done.err
        (backend,) = done.json()["backends"]
        kinds = [(a["kind"], a["model"], a["done"]) for a in backend["actions"]]
        assert kinds == [("preload", QWEN, True)]
        assert emu.nodes[0].preloads[QWEN] == 1
