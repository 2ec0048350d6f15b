"""How the gateway frames what it relays: a plain JSON reply leaves with its length (headers and
body in one write, no chunk framing, which costs the hot path a write per request); a stream
stays chunked, event by event."""

from __future__ import annotations

import json

import httpx

from tests.integration import gateway_harness

CHAT = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_plain_reply_is_relayed_with_its_length_not_in_chunks() -> None:
    async with gateway_harness.running(nodes=1) as h, httpx.AsyncClient() as client:
        reply = await client.post(f"{h.url}/chat/completions", json=CHAT)
        assert reply.status_code == 200
        assert reply.headers["Content-Length"] == str(len(reply.content))
        assert "Transfer-Encoding" not in reply.headers
        assert reply.json()["choices"][0]["message"]["content"]


async def test_a_streamed_reply_is_still_relayed_in_chunks() -> None:
    async with gateway_harness.running(nodes=1) as h, httpx.AsyncClient() as client:
        reply = await client.post(f"{h.url}/chat/completions", json={**CHAT, "stream": True})
        assert reply.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in reply.headers
        events = [e for e in reply.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[0].removeprefix("data: "))["object"] == "chat.completion.chunk"
