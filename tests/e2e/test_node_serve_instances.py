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
import socket
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
from tests.integration import node_instances_fixtures as fx

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


def _serve(
    tmp_path: pathlib.Path, *extra: str, command: str = EMULATED
) -> tuple[subprocess.Popen[str], str]:
    """Starts an agent over `tmp_path`'s data directory; returns it and its URL."""
    process = subprocess.Popen(
        [LLMCTL, "node", "serve", "--port", "0", "--gpus", "1x24GiB", "--command", command, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert "listening on " in banner, process.communicate()
    return process, banner.split("listening on ")[1].split()[0]


@pytest.fixture
def agent(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[str], httpx.Client]]:
    process, url = _serve(tmp_path)
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            yield process, client
    finally:
        process.kill()
        process.wait()


def _ready(client: httpx.Client, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        shown: dict[str, Any] = client.get(f"/v1/instances/{name}").json()
        return shown if shown["state"] == "ready" else None

    found: dict[str, Any] = _until(ready, f"{name} to be ready")
    return found


def _weights(client: httpx.Client, tmp_path: pathlib.Path) -> str:
    local = tmp_path / "weights"
    local.mkdir()
    pulled = client.post("/v1/weights/pull", json={"source": str(local)})
    assert json.loads(pulled.text.splitlines()[-1])["status"] == "success"
    return str(local)


def test_sigterm_of_node_serve_stops_its_instances_process_group_and_exits_0(
    agent: tuple[subprocess.Popen[str], httpx.Client], tmp_path: pathlib.Path
) -> None:
    process, client = agent
    source = _weights(client, tmp_path)
    started = client.put("/v1/instances/chat", json={"weights": source, "gpus": 1})
    shown = _ready(client, "chat")
    models = httpx.get(f"{shown['base_url']}/models", timeout=10).json()
    pgid = shown["pid"]
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    _, errors = process.communicate()

    assert started.status_code == 201
    assert shown["gpus"] == [0]
    assert [card["id"] for card in models["data"]] == ["chat"]
    assert code == 0
    assert processes.group_members(pgid) == []  # no process of the instance is left
    assert TOKEN not in errors
    record = json.loads((tmp_path / "data" / "node" / "state" / "instances.json").read_text())
    assert record["instances"] == []


def test_an_agent_restarted_after_sigkill_adopts_its_running_instance(
    agent: tuple[subprocess.Popen[str], httpx.Client], tmp_path: pathlib.Path
) -> None:
    process, client = agent
    source = _weights(client, tmp_path)
    client.put("/v1/instances/chat", json={"weights": source})
    before = _ready(client, "chat")
    process.kill()  # the agent dies without stopping anything
    process.wait()

    again, url = _serve(tmp_path)
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as second:
            after = second.get("/v1/instances/chat").json()
            held = second.get("/v1/inventory").json()
        again.send_signal(signal.SIGTERM)
        code = again.wait(timeout=30)
    finally:
        again.kill()
        again.wait()
        processes.signal_group(before["pid"], signal.SIGKILL)

    assert (after["state"], after["adopted"]) == ("ready", True)
    assert (after["pid"], after["port"], after["gpus"]) == (before["pid"], before["port"], [0])
    assert held["gpus"][0]["holder"] == "chat"
    assert code == 0
    assert processes.group_members(before["pid"]) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "declare them with --gpus"),
        (["--gpus", "2xlots"], "--gpus '2xlots'"),
        (["--gpus", "1x24GiB", "--command", "vllm serve {path}"], "must contain {port}"),
        (["--gpus", "1x24GiB", "--command", "vllm 'serve"], "No closing quotation"),
        (["--gpus", "1x24GiB", "--instance-host", "gpu-7"], "'gpu-7' is not an IP address"),
        (["--gpus", "1x24GiB", "--instance-host", "203.0.113.77"], "not an address of this"),
        (["--gpus", "1x24GiB", "--advertise-host", "0.0.0.0"], "'0.0.0.0' is a wildcard"),
        (["--gpus", "1x24GiB", "--advertise-host", "http://gpu-7:80"], "is not a host name"),
    ],
)
def test_node_serve_refuses_a_bad_gpu_inventory_command_or_host_with_one_line_and_exit_2(
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


def _machine_name() -> str:
    """This machine's fully-qualified name, or its host name when that is only localhost."""
    name = socket.getfqdn()
    return socket.gethostname() if name.split(".")[0] == "localhost" else name


def test_instances_on_every_interface_answer_other_hosts_at_the_advertised_host_with_a_warning(
    tmp_path: pathlib.Path,
) -> None:
    process, url = _serve(
        tmp_path, "--instance-host", "0.0.0.0", "--advertise-host", "gpu-7.example.test"
    )
    try:
        assert process.stderr is not None
        warning = process.stderr.readline()  # printed before the agent listens
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            client.put("/v1/instances/chat", json={"weights": _weights(client, tmp_path)})
            shown = _ready(client, "chat")
        address = fx.other_address()
        models = httpx.get(f"http://{address}:{shown['port']}/v1/models", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    assert shown["base_url"] == f"http://gpu-7.example.test:{shown['port']}/v1"
    assert [card["id"] for card in models["data"]] == ["chat"]
    assert warning.startswith("warning: instances listen on 0.0.0.0 without --api-key")


def test_instances_on_every_interface_advertise_the_machine_name_and_an_api_key_stops_the_warning(
    tmp_path: pathlib.Path,
) -> None:
    keyed = f"{EMULATED} --api-key instance-sekret"
    process, url = _serve(tmp_path, "--instance-host", "0.0.0.0", command=keyed)
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            client.put("/v1/instances/chat", json={"weights": _weights(client, tmp_path)})
            shown = _ready(client, "chat")  # the agent's probes send the key
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()

    assert shown["base_url"] == f"http://{_machine_name()}:{shown['port']}/v1"
    assert "warning" not in errors
    assert "instance-sekret" not in errors
