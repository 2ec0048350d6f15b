"""Minimal `/api/generate`, `/api/chat`, `/api/embed` and `/api/embeddings` of the Ollama emulator.

The answers are canned text and hash-derived vectors; what matters is the envelope and the
side effect on `/api/ps`: every call loads the model for `keep_alive`, and an empty prompt or
message list with `keep_alive: 0` unloads it (`done_reason` `load` / `unload`, PROTOCOLS §1.8).
Those load-only requests are counted per model (`preloads`, `unloads` in `/_emulator/state`).
Error texts follow PROTOCOLS §1.9. Replies are paced by the node's `pacing.Pace`; `ollama_openai`
reuses the model checks, loading and token counts.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from emulators import embeddings, ollama_node, ollama_wire, server, streams

REPLY = "This is a reply from the llmctl Ollama emulator."
WORDS = REPLY.split(" ")  # the streamed tokens
Call = server.Call[ollama_node.OllamaNode]


def installed_model(node: ollama_node.OllamaNode, text: str) -> ollama_node.Installed:
    """The installed model named `text`; raises BadRequest 404 as Ollama does."""
    if not text:
        raise ollama_wire.BadRequest(404, "model '' not found")
    model = node.find(ollama_wire.parse_name(text))
    if model is None:
        raise ollama_wire.BadRequest(404, f"model '{text}' not found")
    return model


def check(model: ollama_node.Installed, text: str, data: dict[str, Any], task: str) -> None:
    """Raise BadRequest 400 when the model cannot do `task` (or thinking, when asked)."""
    capabilities = model.spec.capabilities
    if "completion" not in capabilities:
        raise ollama_wire.BadRequest(400, f'"{text}" does not support {task}')
    if data.get("think") not in (None, False) and "thinking" not in capabilities:
        raise ollama_wire.BadRequest(400, f'"{text}" does not support thinking')


def load(node: ollama_node.OllamaNode, model: ollama_node.Installed, data: dict[str, Any]) -> str:
    """Apply keep_alive; returns the `done_reason` of a load-only request."""
    options = data.get("options") or {}
    try:
        node.load(model.spec, data.get("keep_alive"), options.get("num_ctx"))
    except ValueError as exc:
        raise ollama_wire.BadRequest(400, str(exc)) from exc
    return "unload" if ollama_node.keep_alive_ns(data.get("keep_alive")) == 0 else "load"


async def generate(call: Call) -> web.StreamResponse:
    """`POST /api/generate`."""
    return await _infer(call, "generate")


async def chat(call: Call) -> web.StreamResponse:
    """`POST /api/chat`."""
    return await _infer(call, "chat")


async def _infer(call: Call, task: str) -> web.StreamResponse:
    node = call.node
    try:
        data = await ollama_wire.body(call.request)
        text = ollama_wire.model_field(data)
        if task == "chat" and not text:
            raise ollama_wire.BadRequest(400, "model is required")
        model = installed_model(node, text)
        check(model, text, data, task)
        reason = load(node, model, data)
    except ollama_wire.BadRequest as exc:
        return exc.response
    head = {"model": model.spec.name, "created_at": ollama_wire.created_at(node)}
    if (task == "generate" and not data.get("prompt")) or (
        task == "chat" and not data.get("messages")
    ):
        (node.preloads if reason == "load" else node.unloads)[model.spec.name] += 1
        return server.json_response(
            {**head, **_content(task, ""), "done": True, "done_reason": reason}
        )
    if data.get("stream", True) is False:
        await node.pace.whole(len(WORDS))
        return server.json_response({**head, **_content(task, REPLY), **final()})
    events = _chunks(node, model.spec.name, task)
    return await streams.LineStream(call.request, call.hits).pump(events)


def _content(task: str, text: str) -> dict[str, Any]:
    if task == "chat":
        return {"message": {"role": "assistant", "content": text}}
    return {"response": text}


def final() -> dict[str, Any]:
    """The last line's `done` fields: reason and token counts (shared with `/v1`)."""
    words = len(WORDS)
    return {
        "done": True,
        "done_reason": "stop",
        "total_duration": 12_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 8,
        "prompt_eval_duration": 2_000_000,
        "eval_count": words,
        "eval_duration": 9_000_000,
    }


async def _chunks(
    node: ollama_node.OllamaNode, name: str, task: str
) -> AsyncGenerator[dict[str, Any], None]:
    async for word in node.pace.tokens(WORDS):
        created = ollama_wire.created_at(node)
        yield {"model": name, "created_at": created, **_content(task, word + " "), "done": False}
    last = {"model": name, "created_at": ollama_wire.created_at(node), **_content(task, "")}
    yield {**last, **final()}


async def embed(call: Call) -> web.StreamResponse:
    """`POST /api/embed`: one vector per input string."""
    node = call.node
    try:
        data = await ollama_wire.body(call.request)
        text = ollama_wire.model_field(data)
        model = node.find(ollama_wire.parse_name(text))
        if model is None:
            raise ollama_wire.BadRequest(404, f'model "{text}" not found, try pulling it first')
        inputs = input_texts(data.get("input"))
        reason = load(node, model, data)
    except ollama_wire.BadRequest as exc:
        return exc.response
    if not inputs:  # a load-only request
        (node.preloads if reason == "load" else node.unloads)[model.spec.name] += 1
    size = int(data.get("dimensions") or model.spec.embedding_length)
    return server.json_response(
        {
            "model": model.spec.name,
            "embeddings": [embeddings.vector(item, size) for item in inputs],
            "total_duration": 3_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": sum(len(item.split()) for item in inputs),
        }
    )


def input_texts(value: Any) -> list[str]:
    """`input` as a list of strings (empty for a load-only request); raises BadRequest 400."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ollama_wire.BadRequest(400, "invalid input type")


async def embeddings_legacy(call: Call) -> web.StreamResponse:
    """`POST /api/embeddings` (deprecated): `{"embedding": [...]}` for one prompt."""
    node = call.node
    try:
        data = await ollama_wire.body(call.request)
        text = ollama_wire.model_field(data)
        model = node.find(ollama_wire.parse_name(text))
        if model is None:
            raise ollama_wire.BadRequest(404, f'model "{text}" not found, try pulling it first')
        load(node, model, data)
    except ollama_wire.BadRequest as exc:
        return exc.response
    prompt = str(data.get("prompt") or "")
    vector = embeddings.vector(prompt, model.spec.embedding_length) if prompt else []
    return server.json_response({"embedding": vector})
