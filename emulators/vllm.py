"""The vLLM emulator: routes, health, models, metrics, runtime LoRA and the start/stop API.

`running(...)`, `in_thread(...)` and `serve(...)` take the options of `build`, as in
`emulators.ollama`. Routes follow PROTOCOLS §3.2 for the emulated version: chat exists for the
`generate` runner, embeddings for `pooling`, LoRA load/unload only with `enable_lora`. Unknown
routes and wrong methods get FastAPI's `{"detail": ...}`; with an API key, `/v1` (and from 0.10
`/v2`, `/inference`, `/cohere`) need `Authorization: Bearer <key>` or get 401
`{"error":"Unauthorized"}`. Imports nothing of the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TypedDict, Unpack

from aiohttp import web

from emulators import runner, server, vllm_completions, vllm_metrics, vllm_node, vllm_openai

DEFAULT_PORT = 8000
Call = server.Call[vllm_node.VllmNode]
Emulator = runner.Emulator[vllm_node.VllmNode]
Routes = Mapping[str, server.Handler[vllm_node.VllmNode]]
_AUTH_PREFIXES_V1 = ("/v1",)
_ERROR_KINDS = {429: "TooManyRequestsError", 503: "ServiceUnavailableError"}
_AUTH_PREFIXES = ("/v1", "/v2", "/inference", "/cohere")


class NodeOptions(TypedDict, total=False):
    """Per-node options: the `vllm serve` flags `VllmNode` takes."""

    model: str
    served_model_names: Sequence[str]
    max_model_len: int
    version: str
    api_key: str | None
    enable_lora: bool
    runner: str
    embedding_size: int
    ttft: float
    token_delay: float


class Options(NodeOptions, total=False):
    """Options of `build`, also accepted by `running`, `in_thread` and `serve`."""

    nodes: int


def build(**options: Unpack[Options]) -> server.Host[vllm_node.VllmNode]:
    """A host of `nodes` (default 1) identical vLLM nodes; see `VllmNode` for the fields.

    `version` (default 0.33.0) picks the error envelope and metric names; `runner` is
    `generate` (chat and completions) or `pooling` (embeddings); `enable_lora` adds the runtime
    LoRA routes; `ttft` and `token_delay` pace inference (`pacing`).
    """
    vllm_node.version_tuple(options.get("version", vllm_node.DEFAULT_VERSION))  # fail early
    node_options = NodeOptions(**{k: v for k, v in options.items() if k != "nodes"})  # type: ignore[typeddict-item]
    nodes = [vllm_node.VllmNode(i, **node_options) for i in range(options.get("nodes", 1))]
    return server.Host(Flavour(), nodes)


def running(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[Options]
) -> AbstractAsyncContextManager[Emulator]:
    """`async with vllm.running(served_model_names=[...]) as emu:` serve in the current loop."""
    return runner.running(build(**options), host, port)


def in_thread(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[Options]
) -> AbstractContextManager[Emulator]:
    """`with vllm.in_thread(...) as emu:` serve from a background thread (sync clients)."""
    return runner.in_thread(lambda: build(**options), host, port)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    announce: Callable[[Emulator], None] | None = None,
    **options: Unpack[Options],
) -> None:
    """Serve until Ctrl-C; `announce(emulator)` runs once the socket listens."""
    runner.serve(lambda: build(**options), host, port, announce)


class Flavour:
    """vLLM's routing table, API-key check and FastAPI's error bodies."""

    name = "vllm"

    def routes(self, node: vllm_node.VllmNode, path: str) -> Routes | None:
        if path in ROUTES:
            return ROUTES[path]
        if node.runner == "generate" and path in GENERATE_ROUTES:
            return GENERATE_ROUTES[path]
        if node.runner == "pooling" and path in POOLING_ROUTES:
            return POOLING_ROUTES[path]
        if node.enable_lora and path in LORA_ROUTES:
            return LORA_ROUTES[path]
        return None

    def refuse(
        self, node: vllm_node.VllmNode, request: web.Request, path: str
    ) -> web.Response | None:
        if node.api_key is None or request.method == "OPTIONS":
            return None
        old = node.version_info < vllm_node.NESTED_ERRORS_SINCE
        prefixes = _AUTH_PREFIXES_V1 if old else _AUTH_PREFIXES
        if not any(path == p or path.startswith(p + "/") for p in prefixes):
            return None
        if request.headers.get("Authorization") == f"Bearer {node.api_key}":
            return None
        return server.json_response({"error": "Unauthorized"}, status=401)

    def not_found(self) -> web.Response:
        return server.json_response({"detail": "Not Found"}, status=404)

    def method_not_allowed(self) -> web.Response:
        return server.json_response({"detail": "Method Not Allowed"}, status=405)

    def internal_error(self, node: vllm_node.VllmNode, status: int, path: str) -> web.Response:
        kind = _ERROR_KINDS.get(status, "InternalServerError")
        return vllm_openai.VllmError(status, "llmctl emulator: injected failure", kind).response(
            node
        )


async def health(call: Call) -> web.StreamResponse:
    """`GET /health`: 200 empty; a dead engine gives 503 (500 before 0.10)."""
    if call.node.healthy:
        return web.Response(status=200)
    return web.Response(status=503 if call.node.nested_errors else 500)


async def version(call: Call) -> web.StreamResponse:
    """`GET /version`."""
    return server.json_response({"version": call.node.version})


async def load(call: Call) -> web.StreamResponse:
    """`GET /load`: the server load counter (the running gauge here)."""
    return server.json_response({"server_load": int(call.node.running)})


async def models(call: Call) -> web.StreamResponse:
    """`GET /v1/models`."""
    return server.json_response(call.node.model_cards())


async def metrics(call: Call) -> web.StreamResponse:
    """`GET /metrics`: Prometheus text."""
    response = web.Response(text=vllm_metrics.render(call.node))
    response.headers["Content-Type"] = vllm_metrics.CONTENT_TYPE
    return response


async def load_lora(call: Call) -> web.StreamResponse:
    """`POST /v1/load_lora_adapter`: 200 plain text, or the version's error envelope."""
    node = call.node
    try:
        data = await vllm_openai.json_body(call.request)
        name, path = str(data.get("lora_name") or ""), str(data.get("lora_path") or "")
        _check_lora_load(node, name, path, bool(data.get("load_inplace")))
    except vllm_openai.VllmError as exc:
        return exc.response(node)
    parent = str(data.get("base_model_name") or node.served_model_names[0])
    node.loras[name] = vllm_node.Lora(path=path, parent=parent)
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


def _check_lora_load(node: vllm_node.VllmNode, name: str, path: str, inplace: bool) -> None:
    invalid = "InvalidUserInput"
    if not name or not path:
        raise vllm_openai.VllmError(
            400, "Both 'lora_name' and 'lora_path' must be provided.", invalid
        )
    if name in node.loras and not inplace:
        message = f"The lora adapter '{name}' has already been loaded."
        if node.nested_errors:
            message += " If you want to load the adapter in place, set 'load_inplace' to True."
        raise vllm_openai.VllmError(400, message, invalid)
    if node.nested_errors and name in node.served_model_names:
        raise vllm_openai.VllmError(
            400, f"The lora adapter '{name}' conflicts with a served base model.", invalid
        )
    if path in node.missing_lora_paths:
        shown = "<path>" if node.nested_errors and path.startswith("/") else path
        message = f"Loading lora {name} failed: No adapter found for {shown}"
        raise vllm_openai.VllmError(404, message, "NotFoundError")


async def unload_lora(call: Call) -> web.StreamResponse:
    """`POST /v1/unload_lora_adapter`."""
    node = call.node
    try:
        data = await vllm_openai.json_body(call.request)
        name = str(data.get("lora_name") or "")
        if not name:
            message = (
                "'lora_name' needs to be provided to unload a LoRA adapter."
                if node.nested_errors
                else "either 'lora_name' and 'lora_int_id' needs to be provided."
            )
            raise vllm_openai.VllmError(400, message, "InvalidUserInput")
        if name not in node.loras:
            raise vllm_openai.VllmError(
                404, f"The lora adapter '{name}' cannot be found.", "NotFoundError"
            )
    except vllm_openai.VllmError as exc:
        return exc.response(node)
    del node.loras[name]
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


ROUTES: dict[str, Routes] = {
    "/health": {"GET": health},
    "/ping": {"GET": health, "POST": health},
    "/version": {"GET": version},
    "/load": {"GET": load},
    "/metrics": {"GET": metrics},
    "/v1/models": {"GET": models},
}
GENERATE_ROUTES: dict[str, Routes] = {
    "/v1/chat/completions": {"POST": vllm_openai.chat_completions},
    "/v1/completions": {"POST": vllm_completions.completions},
}
POOLING_ROUTES: dict[str, Routes] = {
    "/v1/embeddings": {"POST": vllm_openai.embeddings_route},
}
LORA_ROUTES: dict[str, Routes] = {
    "/v1/load_lora_adapter": {"POST": load_lora},
    "/v1/unload_lora_adapter": {"POST": unload_lora},
}
