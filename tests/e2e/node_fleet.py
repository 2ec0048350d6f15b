"""A fleet of real node agents for the converge tests: the emulated Hub, one ``llmctl node
serve`` process per agent (a declared GPU inventory, ``llmctl emulate vllm`` as the instance
command), and the helpers the tests use to look at them from the outside (the agent's API,
``/proc``, a TCP connect) and to run the CLI with NATS.

Only tests/e2e/test_node_converge*.py use it; it starts processes and never touches the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from emulators import hfhub
from tests.e2e.conftest import Cli, Result
from tests.integration import node_agent_process

TOKEN = "node-converge-t0ken-secret"
MIB = 1024 * 1024
PULL_RATE = 8 * MIB  # bytes/s: a 2 MiB repo takes a quarter of a second, enough for progress


@dataclasses.dataclass(frozen=True)
class Agent:
    """One running agent: its root URL and an authenticated client of its API."""

    url: str
    api: httpx.Client
    hub: str = ""  # the emulated Hub every agent pulls from (its admin API publishes commits)

    def instances(self) -> dict[str, dict[str, Any]]:
        """GET /v1/instances, by instance name."""
        found = self.api.get("/v1/instances").json()["instances"]
        return {item["name"]: item for item in found}

    def weights(self) -> list[str]:
        """The names GET /v1/weights lists."""
        return sorted(item["name"] for item in self.api.get("/v1/weights").json()["weights"])


@contextlib.contextmanager
def fleet(
    root: pathlib.Path, agents: int, repos: list[str], gpus: str = "1x24GiB"
) -> Iterator[list[Agent]]:
    """`agents` agents over one hub holding each of `repos` (2 MiB of weights each)."""
    specs = [hfhub.RepoSpec(name, {"config.json": b"{}", "model.safetensors": 2 * MIB})
             for name in repos]  # fmt: skip
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(hfhub.in_thread(repos=specs, pull_rate=PULL_RATE))
        started = []
        for index in range(agents):
            data = root / f"agent-{index}"
            url = stack.enter_context(node_agent_process.running(data, hub.url, TOKEN, gpus))
            api = stack.enter_context(httpx.Client(base_url=url, headers=auth, timeout=30))
            started.append(Agent(url.rstrip("/"), api, hub.url))
        yield started


class Sampler:
    """``with Sampler(read):`` calls ``read`` every 50 ms on a thread; ``seen`` holds what it
    returned, in order, and ``at`` when (``time.monotonic``): a failed read, such as an agent
    busy restarting, is skipped, and a busy machine can starve the thread, so two samples may
    be seconds apart."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self._read = read
        self.seen: list[Any] = []
        self.at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self.seen.append(self._read())
                self.at.append(time.monotonic())
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(httpx.HTTPError):
            self.seen.append(self._read())
            self.at.append(time.monotonic())


def ok(llmctl: Cli, *args: str) -> Result:
    """Runs the CLI and insists on exit 0, showing its output otherwise."""
    result = llmctl(*args)
    assert result.code == 0, f"llmctl {' '.join(args)}: {result.out}{result.err}"
    assert TOKEN not in result.out + result.err
    return result


def eventually(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Polls `check` until it is true; fails naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` still runs (zombies aside)."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def cuda_devices(pid: int) -> str | None:
    """CUDA_VISIBLE_DEVICES in the environment `pid` was started with."""
    raw = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
    pairs = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    value = pairs.get(b"CUDA_VISIBLE_DEVICES")
    return None if value is None else value.decode()


def pgid_of(pid: int) -> int:
    """The process group of `pid`."""
    return os.getpgid(pid)


def rows(docs: list[Any]) -> str:
    """Compact JSON, for assertion messages."""
    return json.dumps(docs, indent=None, default=str)
