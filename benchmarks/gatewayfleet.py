"""The processes `benchmarks/gateway.py` measures: emulated vLLM nodes, a database declaring
them, a real ``llmctl gateway`` and LiteLLM's proxy over the same backends.

`Fleet(tmp, args).start()` starts them in ``tmp`` (logs beside a SQLite database) and
`Fleet.stop` ends them; `cpu_s` reads what processes used from /proc, `waits` how long the
scheduler kept them waiting for a CPU. A script's helper: must
not be imported by the packages.

LiteLLM's proxy runs from a virtualenv of its own (`LITELLM_VENV`, made on first use with
``pip install 'litellm[proxy]'``): its dependencies pin versions (rich, httpx's successor) that
would break the project's own tools in ``.venv``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

BIN = pathlib.Path(sys.executable).parent
ROOT = pathlib.Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_REQUIREMENT = "litellm[proxy]>=1.50"


def litellm_binary() -> str:
    """The proxy's ``litellm`` command, from `LITELLM_VENV`, made (about a minute) if missing."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return str(binary)

    print(f"installing LiteLLM's proxy into {LITELLM_VENV} (once) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, LITELLM_REQUIREMENT], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"cannot install LiteLLM's proxy into {LITELLM_VENV} ({exc}); "
            "run again with --no-litellm to skip it"
        ) from None
    return str(binary)


def litellm_version() -> str:
    """The version of the proxy `litellm_binary` runs (installing it first if need be)."""
    litellm_binary()
    python = str(LITELLM_VENV / "bin" / "python")
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


MODEL = "bench"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far."""
    total = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def waits(pids: list[int]) -> tuple[float, int]:
    """(seconds runnable but waiting for a CPU, times put on a CPU) of every thread of the
    processes so far (/proc/PID/task/*/schedstat): how much the scheduler kept them waiting."""
    waited = slices = 0
    for pid in pids:
        for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                _, wait_ns, runs = (task / "schedstat").read_text().split()
                waited, slices = waited + int(wait_ns), slices + int(runs)
    return waited / 1e9, slices


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (user, system, stolen), leaving
    out interrupt time, which loopback networking adds without any process being charged."""
    fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return (user + nice + system + steal) / _TICK


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _child(command: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[str]:
    out = log.open("w")
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _await_line(process: subprocess.Popen[str], log: pathlib.Path, pattern: str) -> str:
    """The first match of ``pattern`` in the process's output (polled, 60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"{process.args[0]} did not start: {log.read_text()[-2000:]}")


def _await_http(
    url: str, process: subprocess.Popen[str], log: pathlib.Path, token: str | None = None
) -> None:
    deadline = time.monotonic() + 120
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            asked = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback)
            with urllib.request.urlopen(asked, timeout=2) as reply:  # noqa: S310 (loopback)
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} never answered: {log.read_text()[-2000:]}")


class Fleet:
    """The emulators, the database, the gateway and LiteLLM's proxy, in ``tmp``."""

    def __init__(self, tmp: pathlib.Path, args: argparse.Namespace) -> None:
        self.tmp, self.args = tmp, args
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
        self.env |= {"LLMCTL_DATA_DIR": str(tmp), "LLMCTL_DATABASE_URL": f"sqlite:///{tmp}/db"}
        self.processes: list[subprocess.Popen[str]] = []
        self.emulators: list[int] = []
        self.nodes: list[str] = []
        self.floor: list[str] = []  # the nodes through `tcprelay`, with --floor
        self.floor_pids: list[int] = []
        self.gateway = self.litellm = self.baseline = ""
        self.gateway_pid = self.litellm_pid = self.baseline_pid = 0
        self.nats = ""
        self.token = "unused"  # noqa: S105 (no key store: any token)
        self.litellm_key = "sk-" + secrets.token_hex(32)  # its master key: requests need it too

    def _start(
        self, name: str, command: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[str], pathlib.Path]:
        log = self.tmp / f"{name}.log"
        process = _child(command, env, log)
        self.processes.append(process)
        return process, log

    def _llmctl(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "llmctl"), *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"llmctl {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        a = self.args
        servers: list[str] = []
        for e in range(a.emulators):
            process, log = self._start(
                f"emulator-{e}",
                [
                    str(BIN / "llmctl"),
                    "emulate",
                    "vllm",
                    "--port",
                    "0",
                    "--nodes",
                    str(a.nodes),
                    "--served-model-name",
                    MODEL,
                    "--ttft",
                    str(a.ttft),
                    "--token-delay",
                    str(a.token_delay),
                ],
                self.env,
            )
            url = _await_line(process, log, r"listening on (http://\S+)")
            self.emulators.append(process.pid)
            servers.append(url)
            self.nodes += [f"{url}/nodes/{i}" for i in range(a.nodes)]
        if a.floor:
            self._relay(servers)
        for i, node in enumerate(self.nodes):
            self._llmctl(
                "backend", "add", f"node-{i}", "--type", "vllm", "--url", node, "--no-pool"
            )
        self._llmctl("reconcile", "--once", "-o", "json")
        with contextlib.suppress(SystemExit):  # an llmctl without a key store: no key to send
            self.token = json.loads(self._llmctl("key", "create", "bench", "-o", "json"))["secret"]
        command = [str(BIN / "llmctl"), "gateway", "--listen", "127.0.0.1:0"]
        if self.args.profile:  # the gateway under cProfile, its figures written when it stops
            command = [sys.executable, "-m", "cProfile", "-o", self.args.profile, *command]
        served = self._nats_env()
        self.gateway, self.gateway_pid = self._gateway("gateway", command, served)
        if self.args.baseline or self.args.baseline_python:  # another tree, or interpreter
            code = "from controller.cli import main; main()"
            env = served | {"PYTHONPATH": str(self.args.baseline or ROOT)}
            python = self.args.baseline_python or sys.executable
            command = [python, "-c", code, "gateway", "--listen", "127.0.0.1:0"]
            self.baseline, self.baseline_pid = self._gateway("baseline", command, env)
        if not a.no_litellm:
            self._start_litellm()
        if a.nice is not None:  # every proxy measured, the same: the experiment is fair
            for pid in (self.gateway_pid, self.baseline_pid, self.litellm_pid, *self.floor_pids):
                if pid:
                    os.setpriority(os.PRIO_PROCESS, pid, a.nice)

    def _relay(self, servers: list[str]) -> None:
        """One `tcprelay` process in front of every emulator process (``servers``, their URLs
        in `nodes`' order); its nodes are `floor`."""
        upstreams = [server.rsplit(":", 1)[1] for server in servers]
        command = [sys.executable, str(ROOT / "benchmarks" / "tcprelay.py"), *upstreams]
        process, log = self._start("relay", command, self.env)
        ports = _await_line(process, log, r"listening on ([\d ]+)\n").split()
        self.floor_pids.append(process.pid)
        nodes = range(self.args.nodes)
        self.floor = [f"http://127.0.0.1:{port}/nodes/{i}" for port in ports for i in nodes]

    def _nats_env(self) -> dict[str, str]:
        """The gateways' environment: following a NATS server as deployed (nats-server from the
        venv or PATH), or, without one or with --no-nats, re-reading the status twice a second."""
        binary = shutil.which("nats-server", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        if binary is None or self.args.no_nats:
            return self.env
        port = _free_port()
        store = self.tmp / "jetstream"
        command = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
        process, log = self._start("nats", command, self.env)
        _await_line(process, log, r"(Server is ready)")
        self.nats = f"nats://127.0.0.1:{port}"
        return self.env | {"LLMCTL_NATS_URL": self.nats}

    def _gateway(self, name: str, command: list[str], env: dict[str, str]) -> tuple[str, int]:
        process, log = self._start(name, command, env)
        url = _await_line(process, log, r"serving (http://\S+/v1)")
        _await_http(f"{url}/models", process, log, self.token)
        return url, process.pid

    def _start_litellm(self) -> None:
        litellm = litellm_binary()
        deployments = [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"hosted_vllm/{MODEL}",
                    "api_base": f"{n}/v1",
                    "api_key": "none",
                },
            }
            for n in self.nodes
        ]
        config = {
            "model_list": deployments,
            "router_settings": {"routing_strategy": "simple-shuffle"},
            "litellm_settings": {"telemetry": False, "drop_params": True, "set_verbose": False},
        }
        path = self.tmp / "litellm.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        env = {
            k: v for k, v in self.env.items() if not k.startswith("LLMCTL_") and k != "DATABASE_URL"
        }
        env |= {
            "LITELLM_MASTER_KEY": self.litellm_key,  # newer proxies refuse to start without
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
        }
        port = self.args.litellm_port or _free_port()
        process, log = self._start(
            "litellm",
            [
                litellm,
                "--config",
                str(path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            env,
        )
        self.litellm = f"http://127.0.0.1:{port}/v1"
        self.litellm_pid = process.pid
        _await_http(f"http://127.0.0.1:{port}/health/liveliness", process, log)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
