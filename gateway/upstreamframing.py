"""Reading a provider's HTTP/1.1 replies off the bytes its connection receives.

`ReplyParser.feed` takes the bytes as they arrive, in pieces of any size, and tells its
`Events` what they hold: the head (status, headers with lower-case names, the length when
given), the body's pieces (framed by ``Content-Length``, by chunked transfer coding, whose
sizes, extensions and trailers it removes, or by the connection's close), then the end and
whether the connection may carry another request. An interim reply (``100 Continue``) is
skipped; 204 and 304 have no body. What is not HTTP/1.x raises `BadReply`; no head or chunk
size line may exceed `MAX_LINE`. Pure: no sockets, no clock, no logging. Used by
`upstreamhttp`, which owns the connections; the errors of both live here (`upstreamhttp`
names them too).
"""

from __future__ import annotations

from typing import Protocol

MAX_LINE = 64 * 1024  # a head, or a chunk size line, longer than this is refused
_NO_BODY = frozenset({204, 304})
_SIZE, _DATA, _DATA_END, _TRAILERS = -1, 0, -2, -3  # where a chunked body is


class UpstreamError(Exception):
    """The provider could not be reached, or its reply broke off or was not HTTP. ``what``
    says which in a few words that name no address (the gateway passes them to clients)."""

    what = "failed"


class BadReply(UpstreamError):
    what = "not an HTTP/1.1 reply"


class ConnectFailed(UpstreamError):
    what = "cannot connect"


class ConnectTimeout(ConnectFailed, TimeoutError):
    """No connection to the provider within the connect timeout."""


class Disconnected(UpstreamError):
    what = "the connection was lost"


class ReadTimeout(UpstreamError, TimeoutError):
    """The provider was silent longer than the read timeout."""

    what = "timed out"


class Events(Protocol):
    """What a `ReplyParser` reports, in this order: `head`, any `body`, `end`."""

    def head(self, status: int, headers: dict[str, str], length: int | None) -> None: ...

    def body(self, data: bytes) -> None: ...

    def end(self, keep_alive: bool) -> None: ...


class ReplyParser:
    """One connection's replies, one after the other (`expect` before each)."""

    def __init__(self, events: Events) -> None:
        self._events = events
        self._head = bytearray()
        self._framing = ""  # while a body is read: "length", "chunked" or "close"
        self._remaining = 0  # of a length body, or of the current chunk's data
        self._chunk_state = _SIZE
        self._chunked = bytearray()  # chunked framing not decoded yet
        self._keep = False
        self._in_head = False

    def expect(self) -> None:
        """A request went out: what arrives next is its reply."""
        self._head.clear()
        self._framing, self._in_head = "", True

    @property
    def busy(self) -> bool:
        """Whether a reply is on its way (its head or its body not read whole)."""
        return self._in_head or bool(self._framing)

    def feed(self, data: bytes) -> None:
        """Read what arrived; raises `BadReply`."""
        if self._in_head:
            data = self._read_head(data)
        if self._framing and data:
            self._read_body(data)

    def closed(self) -> bool:
        """The connection closed: True when that ended a body read up to the close (the
        end is reported), False when a reply was cut short."""
        if self._framing == "close":
            self._finish(keep=False)
            return True
        return not self.busy

    def _read_head(self, data: bytes) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_LINE:
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
            return self._read_head(rest) if rest else b""
        headers: dict[str, str] = {}
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
        self._in_head = False
        self._frame(int(code), headers)
        return rest

    def _frame(self, code: int, headers: dict[str, str]) -> None:
        length = None
        if code in _NO_BODY:
            framing = ""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            framing = "chunked"
            self._keep = self._keep and "content-length" not in headers
            self._chunk_state = _SIZE
            self._chunked.clear()
        elif "content-length" in headers:
            given = headers["content-length"]
            if not given.isdigit():
                raise BadReply(f"the provider sent Content-Length {given[:40]!r}")
            length = self._remaining = int(given)
            framing = "length" if length else ""
        else:
            framing, self._keep = "close", False
        self._framing = framing
        self._events.head(code, headers, length)
        if not framing:
            self._finish(self._keep)

    def _read_body(self, data: bytes) -> None:
        if self._framing == "length":
            if len(data) > self._remaining:  # more than the reply: nothing to trust after it
                data, self._keep = data[: self._remaining], False
            self._remaining -= len(data)
            self._events.body(data)
            if not self._remaining:
                self._finish(self._keep)
        elif self._framing == "chunked":
            self._chunked += data
            self._dechunk()
        else:
            self._events.body(data)

    def _dechunk(self) -> None:
        """Decode what is buffered of a chunked body (sizes, data, trailers) as far as it goes;
        its pieces are reported together, before the end when they are the last."""
        buffer, pieces, at, ended = self._chunked, [], 0, False
        while not ended:
            if self._chunk_state == _DATA:
                piece = buffer[at : at + self._remaining]
                pieces.append(bytes(piece))
                at += len(piece)
                self._remaining -= len(piece)
                if self._remaining:
                    break
                self._chunk_state = _DATA_END
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                if len(buffer) - at > MAX_LINE:
                    raise BadReply("a chunk size line of the provider's reply is too long")
                break
            line = bytes(buffer[at:end])
            at = end + 2
            if self._chunk_state == _DATA_END:
                if line:
                    raise BadReply("a chunk of the provider's reply overran its size")
                self._chunk_state = _SIZE
            elif self._chunk_state == _SIZE:
                size = line.split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise BadReply(f"a bad chunk size {size[:20]!r}") from None
                self._chunk_state = _DATA if self._remaining else _TRAILERS
            elif not line:  # the empty line that ends the trailers
                ended = True
        del buffer[:at]
        if pieces:
            self._events.body(b"".join(pieces))
        if ended:
            self._finish(self._keep)

    def _finish(self, keep: bool) -> None:
        self._framing = ""
        self._events.end(keep)
