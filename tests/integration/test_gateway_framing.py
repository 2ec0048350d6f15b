"""How the gateway frames what it relays: a plain JSON reply leaves with its length (headers and
body in one write, no chunk framing, which costs the hot path a write per request); a stream
stays chunked, event by event."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import h11
import httpx
import pytest
from aiohttp import web

from gateway import relaying
from runtimestate import resolver
from tests.integration import gateway_harness
from tests.integration.gateway_harness import GENERATIVE, declared
from tests.unit.test_resolver import backend, fleet, model

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


async def test_streams_end_once_each_so_a_kept_alive_connection_stays_in_step() -> None:
    # Piped events are framed by the relay itself, the chunked end by aiohttp's write_eof: h11
    # reads every byte, so a frame missing or written twice is a protocol error before the
    # next response's status line. Tokens 5 ms apart: the events arrive one by one, as a GPU
    # makes them, and are piped.
    async with gateway_harness.running(nodes=1, token_delay=0.005) as h:
        url = urllib.parse.urlsplit(h.url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        conn = h11.Connection(h11.CLIENT)
        body = json.dumps({**CHAT, "stream": True}).encode()
        try:
            for _ in range(3):
                head = [("Host", url.netloc), ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))]  # fmt: skip
                request = h11.Request(method="POST", target=f"{url.path}/chat/completions",
                                      headers=head)  # fmt: skip
                writer.write(conn.send(request) + conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                got, data = [], b""
                while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
                    else:
                        got.append(event)
                        data += bytes(event.data) if isinstance(event, h11.Data) else b""
                assert got[0].status_code == 200
                assert data.endswith(b"data: [DONE]\n\n")
                conn.start_next_cycle()
            assert conn.their_state is h11.IDLE
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b""  # nothing stray after
        finally:
            writer.close()


EVENTS = 3000
FILLER = "x" * 4000


async def _torrent(request: web.Request) -> web.StreamResponse:
    """A provider streaming ~12 MB of events as fast as it is let, its usage event last."""
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    for i in range(EVENTS):
        chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": FILLER}}]}
        await out.write(f"data: {json.dumps({**chunk, 'n': i})}\n\n".encode())
    usage = {"prompt_tokens": 3, "completion_tokens": EVENTS, "total_tokens": EVENTS + 3}
    await out.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


@pytest.mark.parametrize("limit", [relaying._PIPE_LIMIT, 1], ids=["piped", "awaited"])
async def test_a_stream_to_a_slow_client_arrives_whole_and_in_order(monkeypatch, limit) -> None:
    monkeypatch.setattr(relaying, "_PIPE_LIMIT", limit)
    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", _torrent)
    async with gateway_harness.listening(provider, path="") as root:
        served = [backend("p", model("qwen", 8192, caps=GENERATIVE), type_="vllm", base_url=root)]
        r = resolver.Resolver.from_snapshot(fleet(*served), desired=declared(served))
        async with (
            gateway_harness.serving(r) as url,
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "POST", f"{url}/chat/completions", json={**CHAT, "stream": True}
            ) as reply,
        ):
            await asyncio.sleep(0.5)  # not reading: the gateway's socket to us fills up
            text = (await reply.aread()).decode()
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    numbers = [json.loads(e)["n"] for e in events[:-1]]
    assert numbers == list(range(EVENTS))  # the usage event was the gateway's: dropped
