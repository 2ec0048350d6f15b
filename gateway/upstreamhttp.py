"""The gateway's HTTP/1.1 client for its upstream calls: one POST, its reply read as it arrives.

`Client.post` sends a request down a pooled keep-alive connection (a new one when none is idle)
and returns a `Reply` once the status line and headers are in; `Reply.read` gives the body
piece by piece (``Content-Length``, chunked or up to the close), `Reply.close` puts the
connection back in the pool when the reply was read whole and the provider keeps it alive, and
drops it otherwise. Plain TCP or TLS (the platform's CA store, the ``SSL_CERT_*`` variables).

The timeouts: connecting, and the longest silence while a reply is awaited (its head included);
a stream lasts as long as it produces. A reply that has not been read for a while is not the
provider's silence: reading stops (TCP pushes back on the provider) once 256 KiB wait unread.
An idle connection is closed after `KEEPALIVE_S`, before the provider's server would close it
(uvicorn's default is 5 s), so that no request goes down a connection closing at that moment.

Why not aiohttp's client, which the gateway used until issue 18's benchmark: per request it
builds a URL object, a request and a response with their multidicts, a timer context and a
payload writer, and it cost about 40 % of the gateway's CPU per request. This client does one
request the gateway's way, for a quarter of that. Errors are `UpstreamError` (`ConnectTimeout`
and `ReadTimeout` are `TimeoutError`s too). Called by `forwarding`; it never logs.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
import urllib.parse
from collections.abc import Mapping

KEEPALIVE_S = 4.0
_HIGH_WATER = 256 * 1024  # unread bytes of one reply above which the provider is paused
_MAX_HEAD = 64 * 1024  # a status line and headers longer than this are refused
_NO_BODY = frozenset({204, 304})


class UpstreamError(Exception):
    """The provider could not be reached, or its reply broke off or was not HTTP. ``what``
    says which in a few words that name no address (the gateway passes them to clients)."""

    what = "failed"


class ConnectFailed(UpstreamError):
    what = "cannot connect"


class ConnectTimeout(ConnectFailed, TimeoutError):
    """No connection to the provider within the connect timeout."""


class Disconnected(UpstreamError):
    what = "the connection was lost"


class BadReply(UpstreamError):
    what = "not an HTTP/1.1 reply"


class ReadTimeout(UpstreamError, TimeoutError):
    """The provider was silent longer than the read timeout."""

    what = "timed out"


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
        ``deadline`` (``loop.time()``) bounds the whole exchange, connecting included: past
        it a wait raises `ReadTimeout` (`ConnectTimeout` while connecting)."""
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
        context = self._context() if tls else None
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
            raise ConnectTimeout(f"no connection to {host}:{port} within "
                                 f"{self.connect_timeout_s:g} s") from None  # fmt: skip
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from None
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _watch(self, reply: Reply) -> None:
        """Time ``reply``'s wait. One timer for the whole client, due at the earliest expiry,
        rather than one per wait: a cancelled timer stays in the event loop's heap until it is
        due, and at a thousand requests a second with 300 s of read timeout that is hundreds
        of thousands of them."""
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

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_deadline",
        "_ended",
        "_error",
        "_reusable",
        "_waiter",
        "content_length",
        "expiry",
        "headers",
        "loop",
        "status",
    )

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
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        connection = self._connection
        if connection is not None and connection.paused and self._buffered < _HIGH_WATER // 4:
            connection.resume()
        return chunk

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
    """One connection to a provider, one request at a time; parses what it receives."""

    def __init__(self, client: Client, origin: tuple[str, int, bool]) -> None:
        self.client, self.origin = client, origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.reply: Reply | None = None
        self.usable = True
        self.paused = False
        self.idle_since = 0.0
        self._head = bytearray()
        self._framing = ""  # "length", "chunked" or "close" while a body is read
        self._remaining = 0  # of a length body, or of the current chunk's data
        self._chunked = bytearray()  # chunked framing not decoded yet
        self._keep = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, deadline: float | None) -> Reply:
        assert self.transport is not None, "not connected"
        assert self.reply is None, "a request is in flight"
        self.reply = reply = Reply(self, deadline)
        self._head.clear()
        self._framing = ""
        self.transport.write(data)
        return reply

    def data_received(self, data: bytes) -> None:
        reply = self.reply
        if reply is None:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        try:
            if not reply.status:
                data = self._read_head(reply, data)
            if self._framing and data:
                self._read_body(reply, data)
        except UpstreamError as exc:
            reply._fail(exc)
            self.abort()

    def _read_head(self, reply: Reply, data: bytes) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD:
                raise BadReply("the provider's reply headers are too long")
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head.clear()
        lines = head.decode("latin-1").split("\r\n")
        version, _, status = lines[0].partition(" ")
        code = status[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise BadReply(f"the provider's reply is not HTTP/1.x: {lines[0][:80]!r}")
        if code[0] == "1":  # an interim reply (100 Continue): the real one follows
            return self._read_head(reply, rest) if rest else b""
        headers = reply.headers
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise BadReply(f"a malformed header in the provider's reply: {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = headers.get("connection", "").lower()
        self._keep = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        self._frame(reply, int(code), headers)
        reply.status = int(code)
        reply._wake()
        return rest

    def _frame(self, reply: Reply, code: int, headers: dict[str, str]) -> None:
        if code in _NO_BODY:
            self._done(reply)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing, self._remaining = "chunked", -1
            self._keep = self._keep and "content-length" not in headers
            self._chunked.clear()
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise BadReply(f"the provider sent Content-Length {length[:40]!r}")
            reply.content_length = self._remaining = int(length)
            self._framing = "length"
            if not self._remaining:
                self._done(reply)
        else:
            self._framing, self._keep = "close", False

    def _read_body(self, reply: Reply, data: bytes) -> None:
        if self._framing == "length":
            if len(data) > self._remaining:  # more than the reply: nothing to trust after it
                data, self._keep = data[: self._remaining], False
            self._remaining -= len(data)
            self._push(reply, data)
            if not self._remaining:
                self._done(reply)
        elif self._framing == "chunked":
            self._chunked += data
            self._dechunk(reply)
        else:
            self._push(reply, data)

    def _dechunk(self, reply: Reply) -> None:
        """Decode what is buffered of a chunked body (sizes, data, trailers) as far as it goes."""
        buffer, pieces, at = self._chunked, [], 0
        while self._framing:
            if self._remaining > 0:  # inside a chunk's data
                piece = buffer[at : at + self._remaining]
                pieces.append(bytes(piece))
                at += len(piece)
                self._remaining -= len(piece)
                if self._remaining:
                    break
                self._remaining = -2  # its CRLF is next
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                if len(buffer) - at > _MAX_HEAD:
                    raise BadReply("a chunk size line of the provider's reply is too long")
                break
            line = bytes(buffer[at:end])
            at = end + 2
            if self._remaining == -2:  # the CRLF after a chunk's data
                if line:
                    raise BadReply("a chunk of the provider's reply overran its size")
                self._remaining = -1
            elif self._remaining == -1:  # a size line
                size = line.split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise BadReply(f"a bad chunk size {size[:20]!r}") from None
                if not self._remaining:
                    self._remaining = -3  # the last chunk: trailers until an empty line
            elif not line:  # the empty line that ends the trailers
                self._done(reply)
        del buffer[:at]
        if pieces:
            self._push(reply, b"".join(pieces))

    def _push(self, reply: Reply, data: bytes) -> None:
        if not data:
            return
        reply._chunks.append(data)
        reply._buffered += len(data)
        if reply._buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        reply._wake()

    def _done(self, reply: Reply) -> None:
        self._framing = ""
        self.reply = None
        reply._end(self._keep)

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.usable = False
        reply = self.reply
        if reply is None:
            return
        if self._framing == "close":
            self._keep = False
            self._done(reply)
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
