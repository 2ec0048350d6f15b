"""The gateway's upstream HTTP/1.1 client against real sockets: servers here write exact bytes,
so each framing (length, chunked, up to the close), keep-alive, the timeouts, a provider that
breaks off, backpressure and TLS are shown as a provider's server would send them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway import upstreamhttp
from tests import certificates

Script = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class Server:
    """Accepts connections; per request, reads it whole and lets the script answer."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection ended from the client's side
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.script(request, reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1/chat/completions"


def replying(*parts: bytes, pause: float = 0.0, close: bool = False) -> Script:
    async def script(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if close:
            writer.close()

    return script


async def body(reply: upstreamhttp.Reply) -> bytes:
    data = b""
    while (chunk := await reply.read()) is not None:
        data += chunk
    reply.close()
    return data


@pytest.fixture
async def client() -> AsyncIterator[upstreamhttp.Client]:
    c = upstreamhttp.Client(connect_timeout_s=2.0, read_timeout_s=2.0)
    yield c
    await c.aclose()


HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-test"}


async def test_a_request_is_sent_whole_and_keep_alive_reuses_one_connection(client) -> None:
    async with Server(replying(OK)).running() as server:
        for _ in range(3):
            reply = await client.post(server.url(), b'{"model":"m"}', HEADERS)
            assert (reply.status, reply.content_length) == (200, 11)
            assert reply.headers["content-type"] == "application/json"
            assert await body(reply) == b'{"ok":true}'
    assert server.connections == 1
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 13" in lines
    assert b"Authorization: Bearer sk-test" in lines
    assert sent == b'{"model":"m"}'


async def test_a_body_written_in_pieces_arrives_whole(client) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n"
    pieces = [head[:10], head[10:], b"abcdefghijklm", b"nopqrstuvwxyz"]
    async with Server(replying(*pieces, pause=0.02)).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        assert await body(reply) == b"abcdefghijklmnopqrstuvwxyz"
        again = await client.post(server.url(), b"{}", HEADERS)
        assert await body(again) == b"abcdefghijklmnopqrstuvwxyz"
    assert server.connections == 1


async def test_a_chunked_body_is_decoded_with_extensions_and_trailers(client) -> None:
    framed = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"6;name=value\r\ndata: \r\n",
        b"5\r\nhel",
        b"lo\r\n10\r\n",
        b"\n\n0123456789abcd\r\n0\r\nX-Trailer: yes\r\n",
        b"\r\n",
    ]
    async with Server(replying(*framed, pause=0.01)).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        assert reply.content_length is None
        assert await body(reply) == b"data: hello\n\n0123456789abcd"
        second = await client.post(server.url(), b"{}", HEADERS)
        assert await body(second) == b"data: hello\n\n0123456789abcd"
    assert server.connections == 1  # the trailers were read to their end: the connection is clean


async def test_a_body_up_to_the_close_is_read_and_its_connection_not_reused(client) -> None:
    sent = replying(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ", b"the end", close=True
    )
    async with Server(sent).running() as server:
        assert await body(await client.post(server.url(), b"{}", HEADERS)) == b"until the end"
        assert await body(await client.post(server.url(), b"{}", HEADERS)) == b"until the end"
    assert server.connections == 2


async def test_connection_close_and_http_1_0_are_not_reused(client) -> None:
    for head in (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"HTTP/1.0 200 OK\r\n"):
        async with Server(replying(head + b"Content-Length: 2\r\n\r\nok")).running() as server:
            for _ in range(2):
                assert await body(await client.post(server.url(), b"{}", HEADERS)) == b"ok"
        assert server.connections == 2


async def test_an_interim_reply_is_skipped_and_a_204_has_no_body(client) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with Server(replying(interim, b"HTTP/1.1 204 No Content\r\n\r\n")).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        assert reply.status == 204
        assert await body(reply) == b""
        assert (await client.post(server.url(), b"{}", HEADERS)).status == 204
    assert server.connections == 1


async def test_a_provider_that_breaks_off_raises_disconnected(client) -> None:
    cut = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", close=True)
    async with Server(cut).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        assert await reply.read() == b"only part"
        with pytest.raises(upstreamhttp.Disconnected, match="mid-reply"):
            await reply.read()
        reply.close()
    async with Server(replying(close=True)).running() as server:
        with pytest.raises(upstreamhttp.Disconnected, match="before its reply"):
            await client.post(server.url(), b"{}", HEADERS)


@pytest.mark.parametrize(
    "sent",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
    ],
)
async def test_a_reply_that_is_not_http_raises_bad_reply(client, sent: bytes) -> None:
    async with Server(replying(sent)).running() as server:
        with pytest.raises(upstreamhttp.BadReply):
            await body(await client.post(server.url(), b"{}", HEADERS))


async def test_a_bad_chunk_size_raises_bad_reply(client) -> None:
    bad = replying(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n")
    async with Server(bad).running() as server:
        with pytest.raises(upstreamhttp.BadReply, match="chunk size"):
            await body(await client.post(server.url(), b"{}", HEADERS))


async def test_silence_past_the_read_timeout_raises_read_timeout() -> None:
    quick = upstreamhttp.Client(connect_timeout_s=2.0, read_timeout_s=0.2)
    try:
        async with Server(
            replying(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
        ).running() as s:
            reply = await quick.post(s.url(), b"{}", HEADERS)
            assert await reply.read() == b"ab"
            with pytest.raises(upstreamhttp.ReadTimeout) as caught:
                await reply.read()
            assert isinstance(caught.value, TimeoutError)
            reply.close()
        async with Server(replying()).running() as s:  # no head at all
            with pytest.raises(TimeoutError):
                await quick.post(s.url(), b"{}", HEADERS)
            await asyncio.wait_for(s.closed.wait(), 2)  # the connection was dropped
    finally:
        await quick.aclose()


async def test_nothing_listening_raises_connect_failed(client) -> None:
    async with Server(replying(OK)).running() as server:
        url = server.url()
    with pytest.raises(upstreamhttp.ConnectFailed, match="cannot connect"):
        await client.post(url, b"{}", HEADERS)


async def test_a_connection_the_provider_closed_while_idle_is_not_reused(client) -> None:
    async with Server(replying(OK, close=True)).running() as server:  # closes after each reply
        assert await body(await client.post(server.url(), b"{}", HEADERS)) == b'{"ok":true}'
        await asyncio.sleep(0.05)  # its end arrives while it is idle in the pool
        assert await body(await client.post(server.url(), b"{}", HEADERS)) == b'{"ok":true}'
    assert server.connections == 2


async def test_a_connection_idle_past_keepalive_is_closed_not_reused(client, monkeypatch) -> None:
    monkeypatch.setattr(upstreamhttp, "KEEPALIVE_S", 0.05)
    async with Server(replying(OK)).running() as server:
        await body(await client.post(server.url(), b"{}", HEADERS))
        await asyncio.sleep(0.1)
        await body(await client.post(server.url(), b"{}", HEADERS))
        await asyncio.wait_for(server.closed.wait(), 2)
    assert server.connections == 2


async def test_an_unread_reply_pauses_the_provider_until_it_is_read(client) -> None:
    size = 4 * 1024 * 1024
    big = replying(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, b"x" * size)
    async with Server(big).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        await asyncio.sleep(0.2)  # the provider writes as fast as it is let
        unread = sum(map(len, reply._chunks))
        assert unread < size // 2  # TCP pushed back: most of it is still with the provider
        assert len(await body(reply)) == size


async def test_a_cancelled_request_drops_its_connection(client) -> None:
    async with Server(replying()).running() as server:  # never answers
        waiting = asyncio.ensure_future(client.post(server.url(), b"{}", HEADERS))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(server.closed.wait(), 2)


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(client) -> None:
    async with Server(replying(OK)).running() as server:
        with pytest.raises(upstreamhttp.ConnectFailed, match="line break"):
            await client.post(server.url(), b"{}", {"Authorization": "Bearer x\r\nEvil: 1"})
    assert server.connections == 0


async def test_closing_the_client_closes_its_idle_connections(client) -> None:
    async with Server(replying(OK)).running() as server:
        await body(await client.post(server.url(), b"{}", HEADERS))
        await client.aclose()
        await asyncio.wait_for(server.closed.wait(), 2)
        with pytest.raises(upstreamhttp.ConnectFailed, match="closed"):
            await client.post(server.url(), b"{}", HEADERS)


async def test_https_verifies_against_the_ca_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = certificates.authority(tmp_path)
    pair = ca.issue(tmp_path, "provider", hosts=("127.0.0.1",))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pair.cert, pair.key)
    async with Server(replying(OK)).running(tls) as server:
        untrusting = upstreamhttp.Client(connect_timeout_s=2.0, read_timeout_s=2.0)
        with pytest.raises(upstreamhttp.ConnectFailed, match="certificate verify failed"):
            await untrusting.post(server.url("https"), b"{}", HEADERS)
        await untrusting.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
        trusting = upstreamhttp.Client(connect_timeout_s=2.0, read_timeout_s=2.0)
        try:
            reply = await trusting.post(server.url("https"), b"{}", HEADERS)
            assert await body(reply) == b'{"ok":true}'
        finally:
            await trusting.aclose()


async def test_the_deadline_bounds_the_first_byte_not_a_stream_that_goes_on(client) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    events = [b"7\r\ndata: x\r\n"] * 4 + [b"0\r\n\r\n"]
    async with Server(replying(head, *events, pause=0.1)).running() as server:
        deadline = asyncio.get_running_loop().time() + 0.15
        reply = await client.post(server.url(), b"{}", HEADERS, deadline)
        assert await body(reply) == b"data: x" * 4  # 0.4 s in all, past the deadline
    async with Server(replying(head, pause=0.3)).running() as server:  # silent after its head
        deadline = asyncio.get_running_loop().time() + 0.15
        reply = await client.post(server.url(), b"{}", HEADERS, deadline)
        with pytest.raises(upstreamhttp.ReadTimeout):
            await reply.read()
        reply.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def test_a_piped_body_reaches_the_sink_in_order_queued_pieces_first(client) -> None:
    pieces = [chunk(b"event %d\n\n" % i) for i in range(6)]
    async with Server(replying(CHUNKED, *pieces, b"0\r\n\r\n", pause=0.02)).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        first = await reply.read()
        await asyncio.sleep(0.05)  # more arrives and queues before the pipe
        got: list[bytes] = []
        reply.pipe(lambda data: got.append(data) is None)
        assert await reply.piped() is True
        reply.close()
        assert first + b"".join(got) == b"".join(b"event %d\n\n" % i for i in range(6))
        again = await client.post(server.url(), b"{}", HEADERS)  # the connection was reused
        assert len(await body(again)) == 6 * 9
    assert server.connections == 1


async def test_a_sink_that_stops_leaves_the_rest_to_read(client) -> None:
    pieces = [chunk(b"%d;" % i) for i in range(8)]
    async with Server(replying(CHUNKED, *pieces, b"0\r\n\r\n", pause=0.01)).running() as server:
        reply = await client.post(server.url(), b"{}", HEADERS)
        got: list[bytes] = []

        def sink(data: bytes) -> bool:
            got.append(data)
            return len(got) < 3

        reply.pipe(sink)
        assert await reply.piped() is False
        assert b"".join(got) + await body(reply) == b"0;1;2;3;4;5;6;7;"


async def test_a_piped_body_that_breaks_off_or_falls_silent_raises() -> None:
    quick = upstreamhttp.Client(connect_timeout_s=2.0, read_timeout_s=0.6)
    try:
        cut = replying(CHUNKED, chunk(b"a"), chunk(b"b"), pause=0.05, close=True)
        async with Server(cut).running() as server:
            reply = await quick.post(server.url(), b"{}", HEADERS)
            reply.pipe(lambda _: True)
            with pytest.raises(upstreamhttp.Disconnected):
                await reply.piped()
            reply.close()
        # 0.9 s of pieces 0.1 s apart keep a 0.6 s read timeout at bay; then silence ends it
        slow = replying(CHUNKED, *[chunk(b"x")] * 9, pause=0.1)
        async with Server(slow).running() as server:
            reply = await quick.post(server.url(), b"{}", HEADERS)
            got: list[bytes] = []
            reply.pipe(lambda data: got.append(data) is None)
            with pytest.raises(upstreamhttp.ReadTimeout):
                await reply.piped()
            assert b"".join(got) == b"x" * 9  # every piece, then the timeout
            reply.close()
    finally:
        await quick.aclose()
