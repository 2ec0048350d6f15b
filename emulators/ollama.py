"""The Ollama emulator: routes, management endpoints and the public start/stop API.

`running(...)` (async context manager), `in_thread(...)` (sync context manager, server on a
background thread) and `serve(...)` (blocking, for `llmctl emulate ollama`) all take the options of
`build`. Routes follow PROTOCOLS §1.2, the OpenAI-compatible `/v1` routes (part 2 C.1,
`ollama_openai`) and the registry's manifest route (C.2, `ollama_registry`); unknown paths and wrong
methods get gin's plain-text `404 page not found` / `405 method not allowed`. Pull lives in
`ollama_pull`, inference in `ollama_inference`, node state in `ollama_node`. Imports nothing of the
controller.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TypedDict, Unpack

from aiohttp import web

from emulators import (
    catalog,
    names,
    ollama_inference,
    ollama_node,
    ollama_openai,
    ollama_pull,
    ollama_registry,
    ollama_wire,
    pacing,
    runner,
    server,
    timestamps,
)

DEFAULT_PORT = 11434
DEFAULT_VERSION = "0.30.0"
Call = server.Call[ollama_node.OllamaNode]
Emulator = runner.Emulator[ollama_node.OllamaNode]


class Options(TypedDict, total=False):
    """Options of `build`, also accepted by `running`, `in_thread` and `serve`."""

    nodes: int
    installed: Iterable[str]
    catalog: catalog.Catalog | str | pathlib.Path | None
    pull_rate: float | None
    tick_interval: float
    disk_capacity: int | None
    version: str
    ttft: float
    token_delay: float


def build(**options: Unpack[Options]) -> server.Host[ollama_node.OllamaNode]:
    """A host of `nodes` (default 1) Ollama nodes, each with `installed` models on disk.

    `catalog` is a `Catalog`, a JSON/YAML file path, or None for the built-in one. `pull_rate`
    is bytes per second per blob (None or 0: instant), `tick_interval` the seconds between
    progress lines (default 0.06), `disk_capacity` bytes per node (None: unlimited), `ttft` and
    `token_delay` the seconds to the first token and between tokens of inference (`pacing`).
    Raises KeyError when an installed model is not in the catalog.
    """
    registry = options.get("catalog")
    if not isinstance(registry, catalog.Catalog):
        registry = catalog.Catalog() if registry is None else catalog.load(registry)
    nodes = [
        ollama_node.OllamaNode(
            index,
            registry,
            list(options.get("installed", ())),
            pull_rate=options.get("pull_rate"),
            tick_interval=options.get("tick_interval", 0.06),
            disk_capacity=options.get("disk_capacity"),
            version=options.get("version", DEFAULT_VERSION),
            pace=pacing.Pace(options.get("ttft", 0.0), options.get("token_delay", 0.0)),
        )
        for index in range(options.get("nodes", 1))
    ]
    return server.Host(Flavour(), nodes)


def running(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[Options]
) -> AbstractAsyncContextManager[Emulator]:
    """`async with ollama.running(installed=[...]) as emu:` serve in the current loop."""
    return runner.running(build(**options), host, port)


def in_thread(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[Options]
) -> AbstractContextManager[Emulator]:
    """`with ollama.in_thread(...) as emu:` serve from a background thread (sync clients)."""
    return runner.in_thread(lambda: build(**options), host, port)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    announce: Callable[[Emulator], None] | None = None,
    **options: Unpack[Options],
) -> None:
    """Serve until Ctrl-C; `announce(emulator)` runs once the socket listens."""
    runner.serve(lambda: build(**options), host, port, announce)


def publish(emu: Emulator, model: str, revision: str | None = None) -> catalog.ModelSpec:
    """Move the tag `model` in the emulated registry (shared by every node of `emu`) to a new
    revision, as `POST /_emulator/state {"publish": {"model": ...}}` does; returns its spec
    (`.digest` is what `/api/tags` lists once a node pulls it again). Raises KeyError for a
    model not in the catalog."""
    return emu.nodes[0].registry.publish(names.parse(model), revision)


class Flavour:
    """Ollama's routing table and gin's plain-text errors."""

    name = "ollama"

    def routes(
        self, node: ollama_node.OllamaNode, path: str
    ) -> Mapping[str, server.Handler[ollama_node.OllamaNode]] | None:
        if path.startswith("/v2/"):  # the registry's manifests (issue 16: sizes before pulls)
            return _both(ollama_registry.handle)
        if path.startswith(ollama_openai.MODEL_PREFIX) and len(path) > len(
            ollama_openai.MODEL_PREFIX
        ):
            return {"GET": ollama_openai.model}
        return ROUTES.get(path)

    def refuse(
        self, node: ollama_node.OllamaNode, request: web.Request, path: str
    ) -> web.Response | None:
        return None

    def not_found(self) -> web.Response:
        return web.Response(status=404, text="404 page not found")

    def method_not_allowed(self) -> web.Response:
        return web.Response(status=405, text="405 method not allowed")

    def internal_error(self, node: ollama_node.OllamaNode, status: int, path: str) -> web.Response:
        message = "llmctl emulator: injected server error"
        if path.startswith("/v1/"):
            return ollama_openai.error(status, message)
        return ollama_wire.error(status, message)


async def root(call: Call) -> web.StreamResponse:
    """`GET|HEAD /`: liveness."""
    return web.Response(text="Ollama is running")


async def version(call: Call) -> web.StreamResponse:
    """`GET|HEAD /api/version`."""
    return server.json_response({"version": call.node.version})


async def tags(call: Call) -> web.StreamResponse:
    """`GET|HEAD /api/tags`: installed models, newest first."""
    return web.Response(
        body=ollama_wire.tags_body(call.node), content_type="application/json", charset="utf-8"
    )


async def ps(call: Call) -> web.StreamResponse:
    """`GET /api/ps`: loaded models, latest expiry first."""
    node = call.node
    return server.json_response({"models": [ollama_wire.ps_entry(node, m) for m in node.running()]})


async def show(call: Call) -> web.StreamResponse:
    """`POST /api/show`: details, `model_info` (always) and capabilities."""
    try:
        data = await ollama_wire.body(call.request)
        text = ollama_wire.model_field(data)
        if not text:
            raise ollama_wire.BadRequest(400, "model is required")
        name = ollama_wire.parse_name(text)
    except ollama_wire.BadRequest as exc:
        return exc.response
    model = call.node.find(name)
    if model is None:
        return ollama_wire.error(404, f"model '{name.display}' not found")
    return server.json_response(_show_body(model))


def _show_body(model: ollama_node.Installed) -> dict[str, object]:
    spec = model.spec
    parameters = f'{"stop":<30}"<|im_end|>"' if "completion" in spec.capabilities else ""
    body: dict[str, object] = {
        "license": "Emulated license text.",
        "modelfile": f"# Modelfile generated by the llmctl emulator\nFROM {spec.name}\n",
        "parameters": parameters,
        "template": "{{ .Prompt }}",
        "details": spec.details(),
        "model_info": spec.model_info(),
        "capabilities": list(spec.capabilities),
        "modified_at": timestamps.rfc3339_nano(model.modified_ns),
    }
    return {k: v for k, v in body.items() if v or k == "model_info"}


async def delete(call: Call) -> web.StreamResponse:
    """`DELETE /api/delete`: 200 with an empty body, or 404."""
    try:
        data = await ollama_wire.body(call.request)
        text = ollama_wire.model_field(data)
        name = ollama_wire.parse_name(text, f'name "{text}" is invalid')
    except ollama_wire.BadRequest as exc:
        return exc.response
    if not call.node.remove(name):
        return ollama_wire.error(404, f"model '{text}' not found")
    return web.Response(status=200)


async def copy(call: Call) -> web.StreamResponse:
    """`POST /api/copy`: the destination shares the source's blobs."""
    try:
        data = await ollama_wire.body(call.request)
        source_text = str(data.get("source") or "")
        source = call.node.find(ollama_wire.parse_name(source_text))
        destination = ollama_wire.parse_name(str(data.get("destination") or ""))
    except ollama_wire.BadRequest as exc:
        return exc.response
    if source is None:
        return ollama_wire.error(404, f"model '{source_text}' not found")
    seed = source.spec.digest_seed or source.spec.name
    call.node.install(dataclasses.replace(source.spec, name=destination.display, digest_seed=seed))
    return web.Response(status=200)


def _both(
    handler: server.Handler[ollama_node.OllamaNode],
) -> dict[str, server.Handler[ollama_node.OllamaNode]]:
    return {"GET": handler, "HEAD": handler}


ROUTES: dict[str, dict[str, server.Handler[ollama_node.OllamaNode]]] = {
    "/": _both(root),
    "/api/version": _both(version),
    "/api/tags": _both(tags),
    "/api/ps": {"GET": ps},
    "/api/show": {"POST": show},
    "/api/pull": {"POST": ollama_pull.handle},
    "/api/delete": {"DELETE": delete},
    "/api/copy": {"POST": copy},
    "/api/generate": {"POST": ollama_inference.generate},
    "/api/chat": {"POST": ollama_inference.chat},
    "/api/embed": {"POST": ollama_inference.embed},
    "/api/embeddings": {"POST": ollama_inference.embeddings_legacy},
    "/v1/chat/completions": {"POST": ollama_openai.chat_completions},
    "/v1/completions": {"POST": ollama_openai.completions},
    "/v1/embeddings": {"POST": ollama_openai.embeddings_route},
    "/v1/models": {"GET": ollama_openai.models},
}
