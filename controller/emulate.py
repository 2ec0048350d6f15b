"""`llmctl emulate`: run the Ollama, vLLM or Hugging Face Hub emulator in the foreground.

A thin typer wrapper over `emulators.ollama.serve`, `emulators.vllm.serve` and
`emulators.hfhub.serve`, for demos,
benchmarks and manual checks. Prints one line saying where it listens, then serves until
Ctrl-C. A catalog file or an ``--installed`` name it cannot use exits 2 with one line naming
the problem, before anything listens. Imports only `emulators` (and typer); registered by the
CLI root as `llmctl emulate`.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from emulators import catalog, hfhub, names, ollama, runner, vllm, vllm_node
from runtimestate import echo

_NODES_HELP = "Independent nodes, served under /nodes/0, /nodes/1, …"
# vllm serve's engine arguments a node agent passes on: accepted as vllm serve does, unused.
_ENGINE_HELP = "Accepted like vllm serve's (no effect: nothing runs on a GPU)."
_TTFT_HELP = "Seconds before the first token of every generated reply."
_DELAY_HELP = "Seconds between the tokens of every generated reply."

app = typer.Typer(
    help="Run a protocol-faithful Ollama, vLLM or Hugging Face Hub emulator.", no_args_is_help=True
)


def _announce(flavour: str) -> Callable[[runner.Emulator[Any]], None]:
    def announce(emulator: runner.Emulator[Any]) -> None:
        count = len(emulator.nodes)
        extra = f" (nodes under {emulator.url}/nodes/0..{count - 1})" if count > 1 else ""
        typer.echo(f"{flavour} emulator listening on {emulator.url}{extra}")

    return announce


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _registry(path: pathlib.Path | None, installed: list[str]) -> catalog.Catalog:
    """The catalog to serve, with every ``--installed`` model in it; exits 2 when not."""
    try:
        registry = catalog.Catalog() if path is None else catalog.load(path)
    except catalog.CatalogError as exc:
        _fail(str(exc))
    for text in installed:
        try:
            found = registry.get(names.parse(text))
        except names.InvalidNameError as exc:
            _fail(f"--installed: {exc}")
        if found is None:
            known = ", ".join(spec.name for spec in registry.specs())
            _fail(f"--installed: model {echo.quoted(text)} is not in the catalog; it has: {known}")
    return registry


@app.command("ollama")
def ollama_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(ollama.DEFAULT_PORT, help="Port to bind (0 picks a free one)."),
    installed: list[str] = typer.Option([], help="A model already on disk; repeatable."),
    catalog_file: pathlib.Path | None = typer.Option(
        None,
        "--catalog",
        metavar="FILE",
        help="Registry catalog, JSON or YAML (see the README); unset: the built-in models.",
    ),
    pull_rate: float | None = typer.Option(None, help="Download speed in bytes/s; unset: instant."),
    nodes: int = typer.Option(1, min=1, help=_NODES_HELP),
    disk_capacity: int | None = typer.Option(None, help="Disk size of each node in bytes."),
    tick_interval: float = typer.Option(0.06, help="Seconds between pull progress lines."),
    ttft: float = typer.Option(0.0, min=0, metavar="SECONDS", help=_TTFT_HELP),
    token_delay: float = typer.Option(0.0, min=0, metavar="SECONDS", help=_DELAY_HELP),
) -> None:
    """Emulate an Ollama server (ollama serve)."""
    registry = _registry(catalog_file, installed)
    ollama.serve(
        host,
        port,
        _announce("ollama"),
        nodes=nodes,
        installed=installed,
        catalog=registry,
        pull_rate=pull_rate,
        disk_capacity=disk_capacity,
        tick_interval=tick_interval,
        ttft=ttft,
        token_delay=token_delay,
    )


@app.command("vllm")
def vllm_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(vllm.DEFAULT_PORT, help="Port to bind (0 picks a free one)."),
    model: str = typer.Option(
        vllm_node.DEFAULT_MODEL, help="The model vllm serve was started with."
    ),
    served_model_name: list[str] = typer.Option([], help="API alias; repeatable."),
    max_model_len: int = typer.Option(32768, help="Context length shown in /v1/models."),
    version: str = typer.Option(vllm_node.DEFAULT_VERSION, help="Emulated vLLM version."),
    nodes: int = typer.Option(1, min=1, help=_NODES_HELP),
    api_key: str | None = typer.Option(None, help="Require this bearer key under /v1."),
    enable_lora: bool = typer.Option(
        False, "--enable-lora", help="Serve the runtime LoRA load/unload routes."
    ),
    runner_kind: str = typer.Option("generate", "--runner", help="generate or pooling."),
    tensor_parallel_size: int | None = typer.Option(None, help=_ENGINE_HELP),
    gpu_memory_utilization: float | None = typer.Option(None, help=_ENGINE_HELP),
    dtype: str | None = typer.Option(None, help=_ENGINE_HELP),
    quantization: str | None = typer.Option(None, help=_ENGINE_HELP),
    ttft: float = typer.Option(0.0, min=0, metavar="SECONDS", help=_TTFT_HELP),
    token_delay: float = typer.Option(0.0, min=0, metavar="SECONDS", help=_DELAY_HELP),
) -> None:
    """Emulate a vLLM server (vllm serve)."""
    del tensor_parallel_size, gpu_memory_utilization, dtype, quantization  # no GPU to use them
    vllm.serve(
        host,
        port,
        _announce("vllm"),
        nodes=nodes,
        model=model,
        served_model_names=served_model_name,
        max_model_len=max_model_len,
        version=version,
        api_key=api_key,
        enable_lora=enable_lora,
        runner=runner_kind,
        ttft=ttft,
        token_delay=token_delay,
    )


_HUB_REPO = re.compile(r"^([\w.\-]+(?:/[\w.\-]+)?)=(\d+)$")


@app.command("hub")
def hub_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(hfhub.DEFAULT_PORT, help="Port to bind (0 picks a free one)."),
    repo: list[str] = typer.Option(
        [],
        metavar="ORG/NAME=BYTES",
        help="A public repo with config.json and a model.safetensors of BYTES; repeatable.",
    ),
    pull_rate: float | None = typer.Option(None, help="Download speed in bytes/s; unset: instant."),
) -> None:
    """Emulate the Hugging Face Hub (what huggingface_hub downloads from)."""
    specs = []
    for text in repo:
        match = _HUB_REPO.match(text)
        if match is None:
            _fail(f"--repo {echo.quoted(text)}: expected ORG/NAME=BYTES, e.g. org/tiny=25000000")
        files: dict[str, bytes | int | None] = {
            "config.json": b"{}",
            "model.safetensors": int(match[2]),
        }
        specs.append(hfhub.RepoSpec(match[1], files))
    hfhub.serve(host, port, _announce("hub"), repos=specs, pull_rate=pull_rate)
