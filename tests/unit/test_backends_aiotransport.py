"""The aiohttp-backed httpx transport: timeouts, exception mapping, streaming, sharing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from runtimestate.backends import aiotransport, transport


async def _hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(1)
    return web.Response()


async def _stream(request: web.Request) -> web.StreamResponse:
    reply = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
    await reply.prepare(request)
    for i in range(3):
        await reply.write(b'{"n":%d}\n' % i)
    return reply


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.json_response({"body": (await request.read()).decode(), "x": request.headers["x"]})


@pytest.fixture
async def url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/hang", _hang)
    app.router.add_get("/stream", _stream)
    app.router.add_post("/echo", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _client(url: str, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=aiotransport.AiohttpTransport(), **kwargs)  # type: ignore[arg-type]


async def test_a_request_sends_body_and_headers_and_reads_the_reply(url: str) -> None:
    async with _client(url) as client:
        reply = await client.post("/echo", content=b"hello", headers={"x": "y"})
    assert reply.status_code == 200
    assert reply.json() == {"body": "hello", "x": "y"}


async def test_the_read_timeout_of_the_request_raises_read_timeout(url: str) -> None:
    async with _client(url, timeout=httpx.Timeout(0.2)) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/hang")
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_refused_connection_raises_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _client(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")


async def test_a_streamed_reply_arrives_line_by_line_under_the_cap(url: str) -> None:
    capped = transport.capped(aiotransport.AiohttpTransport(), 64)
    async with (
        httpx.AsyncClient(base_url=url, transport=capped) as client,
        client.stream("GET", "/stream") as reply,
    ):
        lines = [line async for line in reply.aiter_lines()]
    assert lines == ['{"n":0}', '{"n":1}', '{"n":2}']


async def test_a_shared_session_outlives_its_transports_until_closed(url: str) -> None:
    shared = aiotransport.SharedSession()
    async with httpx.AsyncClient(
        base_url=url, transport=aiotransport.AiohttpTransport(shared)
    ) as client:
        await client.post("/echo", content=b"", headers={"x": "1"})
    async with httpx.AsyncClient(
        base_url=url, transport=aiotransport.AiohttpTransport(shared)
    ) as client:
        assert (await client.post("/echo", content=b"", headers={"x": "2"})).status_code == 200
    await shared.aclose()
    with pytest.raises(httpx.TransportError):
        shared.session()
