"""The gateway's HTTP/1.1 client for its upstream calls: one POST, its reply read as it arrives.

`Client.post` sends a request down a pooled keep-alive connection (a new one when none is idle)
and returns a `Reply` once its head is in (`upstreamframing` reads the bytes); `Reply.read`
gives the body piece by piece, or `Reply.pipe` hands each piece to a callback as it arrives (a
relay then costs no task switch a piece); `Reply.close` puts the connection back in the pool
when the reply was read whole and the provider keeps it alive, and drops it otherwise. Plain
TCP or TLS (the platform's CA store, the ``SSL_CERT_*`` variables).

Timeouts: connecting, and the longest silence while a reply is awaited (its head included); a
request's deadline bounds its first byte. A reply not read for a while is not the provider's
silence: reading stops (TCP pushes back on the provider) once 256 KiB wait unread. An idle
connection is closed after `KEEPALIVE_S`, before the provider's server would (uvicorn: 5 s),
so that no request goes down a connection closing at that moment.

Why not aiohttp's client: per call it builds a URL, a request and a response with their
multidicts, a timer context and a payload writer; sequential calls to one emulated node cost
their caller 316-347 µs of CPU each through it, 177-185 µs through this. Errors are
`UpstreamError` (`ConnectTimeout` and `ReadTimeout` are `TimeoutError`s too). Called by
`forwarding` and `relaying`; it never logs.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping

from gateway import upstreamframing

KEEPALIVE_S = 4.0
_HIGH_WATER = 256 * 1024  # unread bytes of one reply above which the provider is paused


UpstreamError = upstreamframing.UpstreamError
BadReply = upstreamframing.BadReply
ConnectFailed = upstreamframing.ConnectFailed
ConnectTimeout = upstreamframing.ConnectTimeout
Disconnected = upstreamframing.Disconnected
ReadTimeout = upstreamframing.ReadTimeout


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[tuple[str, int, bool], str, str]:
    """(host, port, tls), the request target and the Host header of an ``http(s)`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectFailed(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    return (parts.hostname, port, tls), target, host_header


class Client:
    """Keep-alive connections per provider; open while an event loop runs, then `aclose`."""

    def __init__(self, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False
        self._waiting: set[Reply] = set()  # replies awaiting bytes, for `_watch`
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float | None = None
    ) -> Reply:
        """Send ``body`` to ``url``; the reply once its head arrived. The caller closes it.
        ``deadline`` (``loop.time()``) bounds the wait for the first byte, connecting, the
        head and the body's first piece included: past it a wait raises `ReadTimeout`
        (`ConnectTimeout` while connecting). Once a piece is in hand only the read timeout
        applies: a stream lasts as long as it produces."""
        origin, target, host = _target(url)
        lines = [f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ConnectFailed(f"the header {name} has a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        connection = self._pooled(origin) or await self._connect(origin, deadline)
        reply = connection.send(head + body, deadline)
        try:
            await reply.head()
        except BaseException:
            reply.close()
            raise
        return reply

    def _pooled(self, origin: tuple[str, int, bool]) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest = time.monotonic() - KEEPALIVE_S
        while idle:
            connection = idle.pop()
            if connection.usable and connection.idle_since > oldest:
                return connection
            connection.abort()
        return None

    async def _connect(self, origin: tuple[str, int, bool], deadline: float | None) -> _Connection:
        if self._closed:
            raise ConnectFailed("the client is closed")
        host, port, tls = origin
        loop = asyncio.get_running_loop()
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        context = self._tls if tls else None
        until = loop.time() + self.connect_timeout_s
        try:
            async with asyncio.timeout_at(until if deadline is None else min(until, deadline)):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {host}:{port} in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from None
        return connection

    def _watch(self, reply: Reply) -> None:
        """Time ``reply``'s wait: one timer for the client, due at the earliest expiry, not one
        per wait (a cancelled timer stays in the loop's heap until due: at 1,000 requests a
        second and a 300 s read timeout, hundreds of thousands)."""
        self._waiting.add(reply)
        if self._watchdog is None or reply.expiry < self._watch_at:
            self._arm(reply.loop, reply.expiry)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = when
        self._watchdog = loop.call_at(when, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = None
        now = loop.time()
        for reply in [r for r in self._waiting if r.expiry <= now]:
            reply.expire()
        later = [r.expiry for r in self._waiting if r.expiry > now]
        if later:
            self._arm(loop, min(later))

    def _release(self, connection: _Connection) -> None:
        if self._closed:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin, []).append(connection)

    async def aclose(self) -> None:
        """Close every idle connection; a connection in use closes when its reply does."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()


class Reply:
    """One reply: `status`, `headers` (lower-case names), `content_length`, then `read`."""

    __slots__ = ("_buffered", "_chunks", "_connection", "_deadline", "_ended", "_error",
                 "_reusable", "_sink", "_waiter", "content_length", "expiry", "headers", "loop",
                 "status")  # fmt: skip

    def __init__(self, connection: _Connection, deadline: float | None) -> None:
        self.status = 0
        self.loop = connection.loop
        self.expiry = 0.0  # while waiting: when the wait times out (``loop.time()``)
        self._deadline = deadline
        self.headers: dict[str, str] = {}
        self.content_length: int | None = None
        self._connection: _Connection | None = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: UpstreamError | None = None
        self._reusable = False
        self._sink: Callable[[bytes], bool] | None = None

    async def head(self) -> None:
        """Wait for the status line and headers."""
        while not self.status:
            await self._wait()

    async def read(self) -> bytes | None:
        """The next piece of the body, None after the last; raises `UpstreamError`."""
        while not self._chunks:
            if self._ended:
                return None
            await self._wait()
        return self._take()

    def _take(self) -> bytes:
        """The oldest queued piece; the provider is let go on once little is left queued."""
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self._deadline = None  # the first byte is in hand
        connection = self._connection
        if connection is not None and connection.paused and self._buffered < _HIGH_WATER // 4:
            connection.resume()
        return chunk

    def pipe(self, sink: Callable[[bytes], bool]) -> None:
        """From now on hand each piece of the body to ``sink`` as it arrives, in the event
        loop's read callback (so ``sink`` must not block), rather than queue it for `read`:
        a relay then costs no task switch a piece. The pieces already queued go first.
        ``sink`` returns False to stop (a slow consumer): later pieces queue for `read`
        again. Then await `piped`."""
        while self._chunks:
            if not sink(self._take()):
                return
        self._sink = sink

    async def piped(self) -> bool:
        """Wait while the body is piped: True once it ended, False when the sink stopped
        (read the rest with `read`). Raises as `read` does; silence is timed the same way."""
        while self._sink is not None and not self._ended:
            await self._wait()
        self._sink = None
        return self._ended and not self._chunks

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        connection = self._connection
        assert connection is not None, "the reply is closed"
        client = connection.client
        self.expiry = self.loop.time() + client.read_timeout_s
        if self._deadline is not None and self._deadline < self.expiry:
            self.expiry = self._deadline
        self._waiter = waiter = self.loop.create_future()
        client._watch(self)
        try:
            await waiter
        finally:
            client._waiting.discard(self)
            self._waiter = None
        if self._error is not None:
            raise self._error

    def expire(self) -> None:
        """The wait timed out (`Client._sweep`)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReadTimeout("the provider was silent past the read timeout"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if not self._ended:
            self._error = error
            self._wake()

    def _end(self, reusable: bool) -> None:
        self._ended, self._reusable = True, reusable
        self._wake()

    def close(self) -> None:
        """Done with the reply: its connection goes back to the pool if it can."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._ended and self._reusable and self._error is None:
            connection.idle()
        else:
            connection.abort()


class _Connection(asyncio.Protocol):
    """One connection to a provider, one request at a time; its replies are read by an
    `upstreamframing.ReplyParser`, whose events this is."""

    def __init__(self, client: Client, origin: tuple[str, int, bool]) -> None:
        self.client, self.origin = client, origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reply: Reply | None = None
        self.usable = True
        self.paused = False
        self.idle_since = 0.0
        self._parser = upstreamframing.ReplyParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, deadline: float | None) -> Reply:
        assert self.transport is not None, "not connected"
        assert self.reply is None, "a request is in flight"
        self.reply = reply = Reply(self, deadline)
        self._parser.expect()
        self.transport.write(data)
        return reply

    def data_received(self, data: bytes) -> None:
        reply = self.reply
        if reply is None:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        try:
            self._parser.feed(data)
        except UpstreamError as exc:
            reply._fail(exc)
            self.abort()

    def head(self, status: int, headers: dict[str, str], length: int | None) -> None:
        reply = self.reply
        assert reply is not None
        reply.headers, reply.content_length, reply.status = headers, length, status
        reply._wake()

    def body(self, data: bytes) -> None:
        reply = self.reply
        if not data or reply is None:
            return
        sink = reply._sink
        if sink is not None:
            reply._deadline = None
            reply.expiry = self.loop.time() + self.client.read_timeout_s
            try:
                if sink(data):
                    return
            except Exception as exc:  # the consumer's fault; the reply cannot go on
                reply._sink = None
                reply._fail(UpstreamError(f"the reply's consumer failed: {exc!r}"))
                self.abort()
                return
            reply._sink = None  # the consumer wants no more now: the rest waits for `read`
            reply._wake()
            return
        reply._chunks.append(data)
        reply._buffered += len(data)
        if reply._buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        reply._wake()

    def end(self, keep_alive: bool) -> None:
        reply, self.reply = self.reply, None
        if reply is not None:
            reply._end(keep_alive)

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.usable = False
        reply = self.reply
        if reply is None or self._parser.closed():
            return
        self.reply = None
        why = f": {exc}" if exc else ""
        when = "mid-reply" if reply.status else "before its reply"
        reply._fail(Disconnected(f"the provider closed the connection {when}{why}"))

    def idle(self) -> None:
        if self.usable and self.transport is not None and not self.transport.is_closing():
            self.client._release(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.usable = False
        self.reply = None
        if self.transport is not None:
            self.transport.abort()
