"""``llmctl node serve`` running instances: a real agent process, a declared GPU, the emulated vLLM.

The agent is started as an operator would, with ``--gpus``, ``--state-dir`` and ``--command``
running ``llmctl emulate vllm`` in place of ``vllm serve``; the test talks to it over HTTP and
looks at the instance's process group from outside (``/proc``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from controller import cli
from nodeagent import processes

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
TOKEN = "node-t0ken-for-instances"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMULATED = (
    f"{shlex.quote(LLMCTL)} emulate vllm --host {{host}} --port {{port}} "
    "--served-model-name {name} --model {path}"
)


def _env(tmp_path: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLMCTL_"))}
    return {**env, "LLMCTL_DATA_DIR": str(tmp_path / "data"), "LLMCTL_NODE_TOKEN": TOKEN}


def _until(check: Any, what: str, seconds: float = 30.0) -> Any:
    """Polls `check` until it returns something truthy; fails naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found


@pytest.fixture
def agent(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[str], httpx.Client]]:
    process = subprocess.Popen(
        [LLMCTL, "node", "serve", "--port", "0", "--gpus", "1x24GiB", "--command", EMULATED],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split("listening on ")[1].split()[0]
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            yield process, client
    finally:
        process.kill()
        process.wait()


def test_sigterm_of_node_serve_stops_its_instances_process_group_and_exits_0(
    agent: tuple[subprocess.Popen[str], httpx.Client], tmp_path: pathlib.Path
) -> None:
    process, client = agent
    local = tmp_path / "weights"
    local.mkdir()
    pulled = client.post("/v1/weights/pull", json={"source": str(local)})
    started = client.put("/v1/instances/chat", json={"weights": str(local), "gpus": 1})

    def ready() -> dict[str, Any] | None:
        shown: dict[str, Any] = client.get("/v1/instances/chat").json()
        return shown if shown["state"] == "ready" else None

    shown = _until(ready, "the instance to be ready")
    models = httpx.get(f"{shown['base_url']}/models", timeout=10).json()
    pgid = shown["pid"]
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    _, errors = process.communicate()

    assert json.loads(pulled.text.splitlines()[-1])["status"] == "success"
    assert started.status_code == 201
    assert shown["gpus"] == [0]
    assert [card["id"] for card in models["data"]] == ["chat"]
    assert code == 0
    assert processes.group_members(pgid) == []  # no process of the instance is left
    assert TOKEN not in errors
    record = json.loads((tmp_path / "data" / "node" / "state" / "instances.json").read_text())
    assert record["instances"] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "declare them with --gpus"),
        (["--gpus", "2xlots"], "--gpus '2xlots'"),
        (["--gpus", "1x24GiB", "--command", "vllm serve {path}"], "must contain {port}"),
        (["--gpus", "1x24GiB", "--command", "vllm 'serve"], "No closing quotation"),
    ],
)
def test_node_serve_refuses_a_bad_gpu_inventory_or_command_with_one_line_and_exit_2(
    tmp_path: pathlib.Path, args: list[str], says: str
) -> None:
    result = CliRunner().invoke(
        cli.app, ["node", "serve", "--port", "0", *args], env=_env(tmp_path)
    )

    assert result.exit_code == 2
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()
