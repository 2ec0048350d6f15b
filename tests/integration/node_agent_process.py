"""A real node agent process for the controller's tests: ``llmctl node serve`` as an operator
starts it, with a declared GPU, the emulated Hub and ``llmctl emulate vllm`` as the instance
command. `running(...)` yields its URL and kills it (and so its instances' groups) at the end.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import subprocess
import sys
from collections.abc import Iterator

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
EMULATED = (
    f"{shlex.quote(LLMCTL)} emulate vllm --host {{host}} --port {{port}} "
    "--served-model-name {name} --model {path}"
)


@contextlib.contextmanager
def running(
    data_dir: pathlib.Path, hub_url: str, token: str, gpus: str = "1x24GiB",
    command: str | None = None, hf_token: str | None = None,
) -> Iterator[str]:  # fmt: skip
    """An agent over `data_dir` pulling from `hub_url` (as `hf_token` if given), answering
    `token`, running instances with `command` (the emulated vLLM server by default); yields
    its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLMCTL_"))}
    env |= {"LLMCTL_DATA_DIR": str(data_dir), "LLMCTL_NODE_TOKEN": token,
            "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    if hf_token is not None:
        env["HF_TOKEN"] = hf_token
    argv = [LLMCTL, "node", "serve", "--port", "0", "--gpus", gpus]
    argv += ["--command", command or EMULATED, "--hf-endpoint", hub_url]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "listening on " in banner, process.communicate()
        yield banner.split("listening on ")[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)  # SIGTERM: the agent stops its instances' groups
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
