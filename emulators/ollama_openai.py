"""Ollama's OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models` and `/v1/models/{m}` (PROTOCOLS part 2 C.1).

Routed by `emulators.ollama`. Model checks, loading (`keep_alive`), the reply text and the token
counts come from `ollama_inference`, so `/v1` and `/api` agree: `usage` is `prompt_eval_count` /
`eval_count`. Bodies are what Ollama's `openai` middleware writes (`system_fingerprint`
`fp_ollama`; chat streams end with a `delta: {}` finish chunk, then the usage chunk when
`stream_options.include_usage`, then `data: [DONE]`; completion streams with `include_usage`
carry an all-zero `usage` on every chunk). Errors keep their status with the envelope
`{"error": {"message", "type", "param": null, "code": null}}`, `type` by status. A
`stream_error` fault sends that envelope as an SSE event (what vLLM sends; real Ollama is
code-read to swallow mid-stream errors). Imports nothing of the controller.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from emulators import embeddings, names, ollama_inference, ollama_node, ollama_wire, server, streams

MODEL_PREFIX = "/v1/models/"
FINGERPRINT = "fp_ollama"
_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
Call = server.Call[ollama_node.OllamaNode]
BadRequest = ollama_wire.BadRequest


def error_body(status: int, message: str) -> dict[str, Any]:
    """Ollama's OpenAI error envelope (`openai.NewError`)."""
    kind = _TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error(status: int, message: str) -> web.Response:
    """The envelope as a response with `status`."""
    return server.json_response(error_body(status, message), status=status)


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What differs between chat and text completions."""

    id_prefix: str
    object: str
    chunk_object: str
    chat: bool

    def choice(self, text: str) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            return {"index": 0, "message": message, "finish_reason": "stop"}
        return {"text": text, "index": 0, "finish_reason": "stop"}

    def chunk_choice(self, text: str, finish: str | None) -> dict[str, Any]:
        if not self.chat:
            return {"text": text, "index": 0, "finish_reason": finish}
        delta = {} if finish else {"role": "assistant", "content": text}
        return {"index": 0, "delta": delta, "finish_reason": finish}


CHAT = _Shape("chatcmpl", "chat.completion", "chat.completion.chunk", chat=True)
TEXT = _Shape("cmpl", "text_completion", "text_completion", chat=False)


def _model_text(data: dict[str, Any]) -> str:
    text = data.get("model")
    if not isinstance(text, str) or not text:
        raise BadRequest(400, "model is required")
    return text


async def chat_completions(call: Call) -> web.StreamResponse:
    """`POST /v1/chat/completions`, streamed when `stream` is true."""
    try:
        data = await ollama_wire.body(call.request)
        text = _model_text(data)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(400, "messages must be a non-empty list")
        _prepare(call.node, text, data, "chat")
    except BadRequest as exc:
        return error(exc.status, exc.message)
    return await _reply(call, data, CHAT, text)


async def completions(call: Call) -> web.StreamResponse:
    """`POST /v1/completions`: `prompt` must be a string."""
    try:
        data = await ollama_wire.body(call.request)
        text = _model_text(data)
        if not isinstance(data.get("prompt"), str):
            raise BadRequest(400, "prompt must be a string")
        _prepare(call.node, text, data, "generate")
    except BadRequest as exc:
        return error(exc.status, exc.message)
    return await _reply(call, data, TEXT, text)


def _prepare(node: ollama_node.OllamaNode, text: str, data: dict[str, Any], task: str) -> None:
    model = ollama_inference.installed_model(node, text)
    ollama_inference.check(model, text, data, task)
    ollama_inference.load(node, model, data)


def _usage() -> dict[str, int]:
    counts = ollama_inference.final()
    prompt, completion = counts["prompt_eval_count"], counts["eval_count"]
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


async def _reply(call: Call, data: dict[str, Any], shape: _Shape, model: str) -> web.StreamResponse:
    usage = _usage()
    number = random.randint(0, 999)  # noqa: S311 (Ollama's ids are rand.Intn(999), not secrets)
    head = {"id": f"{shape.id_prefix}-{number}", "object": shape.object,
            "created": int(time.time()), "model": model,
            "system_fingerprint": FINGERPRINT}  # fmt: skip
    if not data.get("stream"):
        await call.node.pace.whole(usage["completion_tokens"])
        reply = {**head, "choices": [shape.choice(ollama_inference.REPLY)], "usage": usage}
        return server.json_response(reply)
    include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
    events = _chunks(call.node, shape, {**head, "object": shape.chunk_object}, usage, include_usage)
    failure = [error_body(500, streams.STREAM_ERROR)]
    stream = streams.LineStream(call.request, call.hits, streams.SSE, error=failure)
    return await stream.pump(events)


async def _chunks(
    node: ollama_node.OllamaNode,
    shape: _Shape,
    head: dict[str, Any],
    usage: dict[str, int],
    include_usage: bool,
) -> AsyncGenerator[Any, None]:
    zero = {"usage": dict.fromkeys(usage, 0)} if include_usage and not shape.chat else {}
    async for word in node.pace.tokens(ollama_inference.WORDS):
        yield {**head, "choices": [shape.chunk_choice(word + " ", None)], **zero}
    yield {**head, "choices": [shape.chunk_choice("", "stop")], **zero}
    if include_usage:
        yield {**head, "choices": [], "usage": usage}
    yield streams.Raw("[DONE]")


async def embeddings_route(call: Call) -> web.StreamResponse:
    """`POST /v1/embeddings`: `input` a string or strings, `encoding_format` float or base64."""
    node = call.node
    try:
        data = await ollama_wire.body(call.request)
        text = _model_text(data)
        texts = ollama_inference.input_texts(data.get("input"))
        if not texts:
            raise BadRequest(400, "invalid input")
        model = ollama_inference.installed_model(node, text)
        ollama_inference.load(node, model, data)
        size = int(data.get("dimensions") or model.spec.embedding_length)
        fmt = str(data.get("encoding_format") or "float")
        vectors = [embeddings.encoded(embeddings.vector(t, size), fmt) for t in texts]
    except BadRequest as exc:
        return error(exc.status, exc.message)
    except (TypeError, ValueError) as exc:
        return error(400, str(exc))
    tokens = sum(len(t.split()) for t in texts)
    items = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return server.json_response({"object": "list", "data": items, "model": text, "usage": usage})


def _card(model: ollama_node.Installed) -> dict[str, Any]:
    return {
        "id": model.spec.name,
        "object": "model",
        "created": model.modified_ns // 1_000_000_000,
        "owned_by": names.parse(model.spec.name).namespace,
    }


async def models(call: Call) -> web.StreamResponse:
    """`GET /v1/models`: installed models, newest first; `data` is null when there are none."""
    installed = sorted(call.node.installed.values(), key=lambda m: -m.modified_ns)
    cards = [_card(m) for m in installed] or None
    return server.json_response({"object": "list", "data": cards})


async def model(call: Call) -> web.StreamResponse:
    """`GET /v1/models/{m}`: one card, or 404 `model 'X' not found`."""
    text = call.path.removeprefix(MODEL_PREFIX)
    try:
        return server.json_response(_card(ollama_inference.installed_model(call.node, text)))
    except BadRequest as exc:
        return error(exc.status, exc.message)
