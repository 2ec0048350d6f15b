"""The demo's GPU node: an emulated Hugging Face Hub and a node agent with a declared GPU.

`running(directory)` serves a hub with one repo, starts ``llmctl node serve`` as a real process
(one declared 80 GiB GPU, its cache and state under ``directory``, a random bearer token, the
emulated vLLM server as its ``vllm serve``) and yields the agent's URL and the name of the
environment variable holding its token (the demo's Backend declares ``credentials: {env: ...}``,
as an operator would). On exit the agent gets SIGTERM, which stops its instances first.

Called by `controller.demo` only. Touches nothing outside ``directory`` and its own process's
environment (the token variable, removed again on exit); never prints the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pathlib
import secrets
import shlex
import sys
from collections.abc import AsyncIterator

from emulators import hfhub, hfhub_node, hfhub_repos

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
# Weights of a few hundred MB in two shards, so the bar moves for a second or two.
FILES: dict[str, hfhub_repos.FileSpec] = {
    "config.json": b'{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}\n',
    "tokenizer.json": 2_000_000,
    "model-00001-of-00002.safetensors": 150_000_000,
    "model-00002-of-00002.safetensors": 120_000_000,
}
TOKEN_ENV = "LLMCTL_DEMO_NODE_TOKEN"  # noqa: S105 (the variable's name, not a token)
_LISTENING = "node agent listening on "
_START_TIMEOUT_S = 20.0


class AgentError(RuntimeError):
    """The demo's node agent did not start; the message says why (its last error line)."""


def available() -> bool:
    """Whether the node agent's extra is installed (``pip install 'llmctl[node]'``)."""
    return importlib.util.find_spec("huggingface_hub") is not None


def _llmctl() -> list[str]:
    """How to run this llmctl again: its console script beside the interpreter, else the
    interpreter calling the CLI's entry point."""
    script = pathlib.Path(sys.executable).parent / "llmctl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from controller import cli; cli.main()"]


def _instance_template() -> str:
    """The agent's instance command: the emulated vLLM server, with vllm serve's flags."""
    emulate = [*_llmctl(), "emulate", "vllm"]
    flags = "--host {host} --port {port} --served-model-name {name} --model {path}"
    return " ".join(shlex.quote(part) for part in emulate) + " " + flags


@contextlib.asynccontextmanager
async def running(directory: pathlib.Path, pull_rate: float) -> AsyncIterator[str]:
    """Yield the URL of a node agent whose hub serves `MODEL`; its token is in `TOKEN_ENV`."""
    repo = hfhub_node.RepoSpec(MODEL, FILES)
    token = secrets.token_urlsafe(24)
    async with hfhub.running(repos=[repo], pull_rate=pull_rate) as hub:
        environment = {**os.environ, "LLMCTL_NODE_TOKEN": token}
        argv = [
            *_llmctl(), "node", "serve", "--port", "0", "--gpus", "1x80GiB",
            "--cache-dir", str(directory / "node" / "cache"),
            "--state-dir", str(directory / "node" / "state"),
            "--hf-endpoint", hub.url, "--command", _instance_template(),
        ]  # fmt: skip
        agent = await asyncio.create_subprocess_exec(
            *argv,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops it
        )
        os.environ[TOKEN_ENV] = token
        try:
            try:
                url = await asyncio.wait_for(_announced(agent), _START_TIMEOUT_S)
            except TimeoutError:
                raise AgentError(
                    f"the demo's node agent did not listen within {_START_TIMEOUT_S:g} s"
                ) from None
            yield url
        finally:
            os.environ.pop(TOKEN_ENV, None)
            await _stop(agent)


async def _announced(agent: asyncio.subprocess.Process) -> str:
    """The URL the agent prints once it listens; raises AgentError if it exits first."""
    assert agent.stdout is not None
    while line := (await agent.stdout.readline()).decode():
        if line.startswith(_LISTENING):
            return line[len(_LISTENING) :].split()[0]
    assert agent.stderr is not None
    said = (await agent.stderr.read()).decode(errors="replace").strip().splitlines()
    why = said[-1] if said else f"exit status {await agent.wait()}"
    raise AgentError(f"the demo's node agent did not start: {why}")


async def _stop(agent: asyncio.subprocess.Process) -> None:
    """SIGTERM (the agent stops its instances), then SIGKILL if it is still up after 15 s."""
    if agent.returncode is not None:
        return
    agent.terminate()
    try:
        await asyncio.wait_for(agent.wait(), 15.0)
    except TimeoutError:
        agent.kill()
        await agent.wait()
