"""``llmctl node serve`` as an operator runs it: a real process, a token file, a plain HTTP client.

The emulated Hugging Face Hub runs in a thread of the test process; the agent pulls from it with
the real huggingface_hub client. Bad options are checked in process (exit 2, one line, nothing
listening and nothing written).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from controller import cli
from emulators import hfhub

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
TOKEN = "node-t0ken-from-a-file"
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def hub() -> Iterator[hfhub.Emulator]:
    repos = [hfhub.RepoSpec("org/tiny", {"config.json": b"{}", "model.safetensors": 12 * MIB})]
    with hfhub.in_thread(repos=repos) as emu:
        yield emu


def _env(tmp_path: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLMCTL_"))}
    return {**env, "LLMCTL_DATA_DIR": str(tmp_path / "data"), "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_node_serve_pulls_through_its_api_with_the_token_and_stops_on_sigterm(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = _free_port()
    options = ["--port", str(port), "--token-file", str(token_file), "--hf-endpoint", hub.url]
    process = subprocess.Popen(
        [LLMCTL, "node", "serve", "--gpus", "1x24GiB", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            refused = client.get("/v1/weights")
            with client.stream(
                "POST",
                "/v1/weights/pull",
                json={"source": "org/tiny"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as pulled:
                lines = [json.loads(line) for line in pulled.iter_lines()]
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    finally:
        process.kill()
        process.wait()
    _, errors = process.communicate()

    assert f"node agent listening on {url}" in banner
    assert TOKEN not in banner + errors
    assert refused.status_code == 401
    assert lines[0] == {"status": "pulling org/tiny", "completed": 0, "total": 12 * MIB + 2}
    assert lines[-1]["status"] == "success"
    snapshot = pathlib.Path(lines[-1]["weights"]["path"])
    assert snapshot.is_relative_to(tmp_path / "data" / "node" / "cache")
    assert (snapshot / "model.safetensors").stat().st_size == 12 * MIB
    assert code == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "0.0.0.0"], "'0.0.0.0' is not a loopback address and no token is set"),
        (["--token-file", "/nonexistent/token"], "No such file or directory"),
        (["--token-file", "{empty}"], "is empty: write the token on the file's first line"),
    ],
)
def test_node_serve_refuses_bad_options_with_one_line_and_exit_2(
    tmp_path: pathlib.Path, args: list[str], says: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    args = [a.replace("{empty}", str(empty)) for a in args]

    result = CliRunner().invoke(
        cli.app,
        ["node", "serve", "--gpus", "1x24GiB", "--port", str(_free_port()), *args],
        env=_env(tmp_path),
    )

    assert result.exit_code == 2
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""  # never announced: nothing listened
    assert not (tmp_path / "data").exists()


def test_node_serve_on_a_busy_port_says_so_in_one_line_and_exits_2(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli.app, ["node", "serve", "--gpus", "1x24GiB", "--port", str(port)], env=_env(tmp_path)
        )

    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "pick another --port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_node_serve_takes_its_token_from_llmctl_node_token(tmp_path: pathlib.Path) -> None:
    port = _free_port()
    env = {**_env(tmp_path), "LLMCTL_NODE_TOKEN": TOKEN}
    process = subprocess.Popen(
        [LLMCTL, "node", "serve", "--gpus", "1x24GiB", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        refused = httpx.get(f"{url}/v1/info", timeout=10)
        answered = httpx.get(
            f"{url}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    finally:
        process.kill()
        process.wait()

    assert "bearer token required" in banner
    assert TOKEN not in banner
    assert refused.status_code == 401
    assert answered.status_code == 200
    assert answered.json()["cache_dir"] == str(tmp_path / "data" / "node" / "cache")
    assert code == 0


def _agent(tmp_path: pathlib.Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LLMCTL, "node", "serve", "--gpus", "1x24GiB", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )


def test_a_second_agent_on_one_state_dir_exits_1_naming_the_holder_until_it_is_killed(
    tmp_path: pathlib.Path,
) -> None:
    started: list[subprocess.Popen[str]] = []
    try:
        first = _agent(tmp_path)
        started.append(first)
        assert first.stdout is not None
        assert "listening on" in first.stdout.readline()
        second = _agent(tmp_path)
        started.append(second)
        said, refused = second.communicate(timeout=20)
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.wait()
        third = _agent(tmp_path)
        started.append(third)
        assert third.stdout is not None
        banner = third.stdout.readline()
        third.send_signal(signal.SIGTERM)
        third.wait(timeout=20)
    finally:
        for process in started:
            process.kill()
            process.wait()

    state = tmp_path / "data" / "node" / "state"
    assert second.returncode == 1
    assert refused.strip().splitlines() == [
        f"error: state directory {state} is in use by another node agent (pid {first.pid}): "
        "stop that agent or give another --state-dir"
    ]
    assert said == ""  # it never listened
    assert "listening on" in banner
    assert third.returncode == 0


def test_closing_the_only_pull_stream_stops_the_agents_download_from_the_hub(
    hub: hfhub.Emulator, tmp_path: pathlib.Path
) -> None:
    hub.nodes[0].pull_rate = 2 * MIB  # six seconds for the model file
    agent = _agent(tmp_path, "--hf-endpoint", hub.url)
    try:
        assert agent.stdout is not None
        url = agent.stdout.readline().split("listening on ")[1].split()[0]
        body = {"source": "org/tiny"}
        with httpx.stream("POST", f"{url}/v1/weights/pull", json=body, timeout=30) as pulled:
            lines = pulled.iter_lines()
            seen = [json.loads(next(lines)), json.loads(next(lines))]  # config.json is done
        deadline = time.monotonic() + 3
        while not (cut := [d for d in hub.nodes[0].downloads if d.path == "model.safetensors"]):
            assert time.monotonic() < deadline, "the agent went on pulling without its client"
            time.sleep(0.02)
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=20)
    finally:
        agent.kill()
        agent.wait()

    assert [line["completed"] for line in seen] == [0, 2]
    assert [(d.outcome, d.sent < 12 * MIB) for d in cut] == [("client gone", True)]
    assert code == 0
