"""Fixtures of the node hold tests: a real agent process over the emulated Hub, declared through
the CLI as a node backend, and helpers that poll with a deadline.

`Fleet` bundles the hub emulator (its `HubNode`: repos, pull rate, faults, download log), the
agent's URL and data directory, and the `llmctl` fixture; `Fleet.declare(...)` adds the backend
``gpu-1`` (token from ``NODE_TOKEN``) and models to the default pool, as an operator does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from emulators import hfhub, hfhub_node
from tests.e2e.conftest import Cli, Result
from tests.integration import node_agent_process

TOKEN = "holds-t0ken-very-secret"
MIB = 1024 * 1024


@dataclasses.dataclass
class Fleet:
    """One agent, its hub and the CLI."""

    llmctl: Cli
    hub: hfhub_node.HubNode
    agent_url: str
    data_dir: pathlib.Path

    def ok(self, *args: str) -> Result:
        """Runs ``llmctl ARGS`` and asserts it exits 0."""
        result = self.llmctl(*args)
        assert result.code == 0, result.out + result.err
        return result

    def declare(self, *models: str, env: str = "NODE_TOKEN") -> None:
        """Backend ``gpu-1`` at the agent (token from `env`) and `models` in the default pool."""
        self.ok("backend", "add", "gpu-1", "--type", "node", "--url", self.agent_url,
                "--api-key-env", env)  # fmt: skip
        for model in models:
            self.ok("model", "add", model)

    def backend(self) -> Any:
        """``backend get gpu-1 -o json``."""
        return self.ok("backend", "get", "gpu-1", "-o", "json").json()

    def downloads(self) -> list[Any]:
        """``downloads list -o json``, oldest first."""
        found = self.ok("downloads", "list", "-o", "json").json()
        return list(found["items"] if isinstance(found, dict) else found)

    @property
    def cache(self) -> pathlib.Path:
        """The agent's weights cache directory."""
        return self.data_dir / "node" / "cache"


def repo(repo_id: str, size: int = MIB, **options: Any) -> hfhub.RepoSpec:
    """A repo with a config and a generated safetensors file of `size` bytes."""
    files = {"config.json": b"{}", "model.safetensors": size}
    return hfhub.RepoSpec(repo_id, files, **options)


@contextlib.contextmanager
def fleet(
    llmctl: Cli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
    repos: Sequence[hfhub.RepoSpec], gpus: str = "1x24GiB", command: str | None = None,
    pull_rate: float | None = None, hf_token: str | None = None,
) -> Iterator[Fleet]:  # fmt: skip
    """The hub serving `repos` and an agent with `gpus` (and instance `command`) over it;
    ``NODE_TOKEN`` holds the agent's token for the CLI."""
    monkeypatch.setenv("NODE_TOKEN", TOKEN)
    data = tmp_path / "agent"
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(hfhub.in_thread(repos=repos, pull_rate=pull_rate))
        url = stack.enter_context(
            node_agent_process.running(
                data, emu.url, TOKEN, gpus=gpus, command=command, hf_token=hf_token
            )
        )
        yield Fleet(llmctl, emu.nodes[0], url, data)


def eventually(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    """Polls `check` until it returns something truthy, which it returns; fails naming `what`."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found
