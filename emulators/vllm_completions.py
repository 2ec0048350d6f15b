"""`POST /v1/completions` of the vLLM emulator: text completions, plain and streamed.

Routed by `emulators.vllm` for the `generate` runner. Like chat (`vllm_openai`): the body must
be JSON with a non-empty `prompt` (a string, strings or token ids), the response `model` echoes the
requested name, streams are SSE ending with `data: [DONE]`, `stream_options.include_usage`
adds a last chunk with `choices: []` (PROTOCOLS part 2 B.6), replies are paced by the node's
`pacing.Pace`, and a `stream_error` fault sends vLLM's mid-stream error event. Imports nothing
of the controller.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from emulators import server, vllm_node, vllm_openai

REPLY = vllm_openai.REPLY
Call = server.Call[vllm_node.VllmNode]
_NO_PROMPT = (
    "1 validation error(s): body: Value error, "
    "Either prompt or prompt_embeds must be provided and non-empty."
)


async def completions(call: Call) -> web.StreamResponse:
    """`POST /v1/completions`, streamed when `stream` is true."""
    node = call.node
    try:
        data = await vllm_openai.json_body(call.request)
        if data.get("prompt") in (None, "", []):
            raise vllm_openai.VllmError(400, _NO_PROMPT, "Bad Request", "body")
        model = vllm_openai.model_for(node, data)
    except vllm_openai.VllmError as exc:
        return exc.response(node)
    prompt = data["prompt"]
    prompt_tokens = len((prompt if isinstance(prompt, str) else json.dumps(prompt)).split())
    completion_tokens = len(vllm_openai.WORDS)
    vllm_openai.count(node, prompt_tokens, completion_tokens)
    usage = vllm_openai.usage_of(prompt_tokens, completion_tokens)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": model}  # fmt: skip
    if data.get("stream"):
        events = _chunks(node, head, vllm_openai.stream_usage(data, usage))
        return await vllm_openai.sse(call, events)
    await node.pace.whole(completion_tokens)
    return server.json_response(_completion(head, usage))


def _completion(head: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    choice = {"index": 0, "text": REPLY, "logprobs": None, "finish_reason": "stop",
              "stop_reason": None, "token_ids": None, "prompt_logprobs": None,
              "prompt_token_ids": None}  # fmt: skip
    return {
        **head,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage,
        "kv_transfer_params": None,
    }


async def _chunks(
    node: vllm_node.VllmNode, head: dict[str, Any], usage: dict[str, Any] | None
) -> AsyncGenerator[Any, None]:
    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                  "stop_reason": None}  # fmt: skip
        return {**head, "choices": [choice]}

    async for word in node.pace.tokens(vllm_openai.WORDS):
        yield chunk(word + " ")
    yield chunk("", finish="stop")
    if usage is not None:
        yield {**head, "choices": [], "usage": usage}
    yield vllm_openai.DONE
