"""Minimal OpenAI-compatible inference of the vLLM emulator: chat completions and embeddings.

Bodies follow PROTOCOLS §3.8 and part 2 B.6: every key vLLM serialises is present (nulls included),
streamed chat is SSE ending with `data: [DONE]`, `stream_options.include_usage` adds a last chunk
with `choices: []` and the usage (None fields dropped), and a `stream_error` fault sends vLLM's
mid-stream error event then `[DONE]`. Replies are paced by the node's `pacing.Pace`; the response
`model` echoes the requested name (B.x). Requests must be JSON (`Content-Type`), `model` may be
omitted (the first served name is used), and an unknown model gets the version's 404 envelope. Also
home of `VllmError`, `json_body`, `model_for` and the streaming helpers, used by the other vLLM
handlers (`vllm_completions`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from emulators import embeddings, server, streams, vllm_node

REPLY = "This is a reply from the llmctl vLLM emulator."
WORDS = REPLY.split(" ")  # the streamed tokens
DONE = streams.Raw("[DONE]")
Call = server.Call[vllm_node.VllmNode]


class VllmError(Exception):
    """An error vLLM answers with its envelope; `status` is also the `code`."""

    def __init__(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def response(self, node: vllm_node.VllmNode) -> web.Response:
        """The envelope of `node`'s version."""
        body = node.error_body(self.status, self.message, self.kind, self.param)
        return server.json_response(body, status=self.status)


async def json_body(request: web.Request, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of a POST; raises VllmError 400 as vLLM's validation handler does."""
    if request.content_type != "application/json":
        raise VllmError(
            400, "Unsupported Media Type: Only 'application/json' is allowed", "Bad Request"
        )
    try:
        data = json.loads(await request.read() or b"null")
    except json.JSONDecodeError as exc:
        raise VllmError(
            400, f"1 validation error(s): body: JSON decode error: {exc.msg}", "Bad Request", "body"
        ) from exc
    if not isinstance(data, dict):
        raise VllmError(
            400,
            "1 validation error(s): body: Input should be a valid dictionary",
            "Bad Request",
            "body",
        )
    missing = [field for field in required if field not in data]
    if missing:
        text = "; ".join(f"body.{field}: Field required" for field in missing)
        raise VllmError(
            400, f"{len(missing)} validation error(s): {text}", "Bad Request", f"body.{missing[0]}"
        )
    return data


def model_for(node: vllm_node.VllmNode, data: dict[str, Any]) -> str:
    """The response `model`; raises VllmError 404 for a name that is not served."""
    requested = data.get("model")
    name = node.resolve(requested)
    if name is not None:
        return name
    message = f"The model `{requested}` does not exist."
    if not node.nested_errors:
        raise VllmError(404, message, "NotFoundError")
    aliases = ", ".join([*node.served_model_names, *node.loras])
    raise VllmError(404, f"{message} Valid aliases: {aliases}.", "NotFoundError", "model")


async def chat_completions(call: Call) -> web.StreamResponse:
    """`POST /v1/chat/completions`, streamed when `stream` is true."""
    node = call.node
    try:
        data = await json_body(call.request, required=("messages",))
        model = model_for(node, data)
    except VllmError as exc:
        return exc.response(node)
    prompt_tokens = sum(
        len(str(m.get("content", "")).split()) for m in data["messages"] if isinstance(m, dict)
    )
    completion_tokens = len(WORDS)
    count(node, prompt_tokens, completion_tokens)
    usage = usage_of(prompt_tokens, completion_tokens)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    if data.get("stream"):
        events = _chunks(node, head, stream_usage(data, usage))
        return await sse(call, events)
    await node.pace.whole(completion_tokens)
    return server.json_response(_completion(head, usage))


def count(node: vllm_node.VllmNode, prompt_tokens: int, completion_tokens: int) -> None:
    """Add one finished request to the node's counters (`/metrics`)."""
    node.counters["prompt_tokens"] += prompt_tokens
    node.counters["generation_tokens"] += completion_tokens
    node.counters["success_stop"] += 1


def stream_usage(data: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any] | None:
    """The usage of the last streamed chunk, None fields dropped; None unless asked for."""
    if not (data.get("stream_options") or {}).get("include_usage"):
        return None
    return {key: value for key, value in usage.items() if value is not None}


async def sse(call: Call, events: AsyncGenerator[Any, None]) -> web.StreamResponse:
    """Stream `events` as SSE; a `stream_error` fault sends vLLM's error event, then `[DONE]`."""
    body = call.node.error_body(500, streams.STREAM_ERROR, "InternalServerError", None)
    stream = streams.LineStream(call.request, call.hits, streams.SSE, error=[body, DONE])
    return await stream.pump(events)


def usage_of(prompt: int, completion: int) -> dict[str, Any]:
    """vLLM's `UsageInfo`."""
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
    }


def _completion(head: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": REPLY, "reasoning": None, "refusal": None,
               "annotations": None, "audio": None, "function_call": None}  # fmt: skip
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop",
              "stop_reason": None, "token_ids": None}  # fmt: skip
    return {
        **head,
        "object": "chat.completion",
        "choices": [choice],
        "usage": {**usage, "completion_tokens_details": None},
        "service_tier": None,
        "system_fingerprint": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


async def _chunks(
    node: vllm_node.VllmNode, head: dict[str, Any], usage: dict[str, Any] | None
) -> AsyncGenerator[Any, None]:
    base = {**head, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    first = True
    async for word in node.pace.tokens(WORDS):
        if first:
            yield chunk({"role": "assistant", "content": ""})
            first = False
        yield chunk({"content": word + " "})
    yield chunk({"content": ""}, finish="stop")
    if usage is not None:
        yield {**base, "choices": [], "usage": usage}
    yield DONE


async def embeddings_route(call: Call) -> web.StreamResponse:
    """`POST /v1/embeddings`: one vector per input item."""
    node = call.node
    try:
        data = await json_body(call.request, required=("input",))
        model = model_for(node, data)
    except VllmError as exc:
        return exc.response(node)
    items = _inputs(data["input"])
    size = int(data.get("dimensions") or node.embedding_size)
    fmt = str(data.get("encoding_format") or "float")
    try:
        vectors = [embeddings.encoded(embeddings.vector(item, size), fmt) for item in items]
    except ValueError as exc:
        return VllmError(400, str(exc), "BadRequestError", "encoding_format").response(node)
    tokens = sum(len(item.split()) or 1 for item in items)
    node.counters["prompt_tokens"] += tokens
    return server.json_response(
        {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": [
                {"index": i, "object": "embedding", "embedding": vector}
                for i, vector in enumerate(vectors)
            ],
            "usage": {**usage_of(tokens, 0), "completion_tokens": 0},
        }
    )


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [json.dumps(value)]
    if isinstance(value, list):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return [json.dumps(value)]
