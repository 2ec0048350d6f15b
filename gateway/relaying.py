"""Relaying a provider's reply to the client as it arrives, once its first byte is in hand.

`relay` takes an opened upstream reply (`Opened`: the `upstreamhttp.Reply` and its first
chunk) and answers the client: an error status (one the gateway does not retry, a 400 say) with
its body redacted of the provider's key; a success relayed chunk by chunk. A stream
(``text/event-stream``) is written event by event, never buffered past the event being read, so
that when the provider fails mid-stream the client's stream ends cleanly with OpenAI's error
event and ``[DONE]`` (PROTOCOLS D.4); a JSON reply that breaks off mid-body closes the client's
connection, so no truncated body looks complete. On the way it notes in the request's
`exchange.Exchange` the backend's ``usage`` (`usage`), drops the usage-only event the gateway
asked for on the client's behalf, and keeps a successful JSON reply when the exchange asks
(``keep_reply``, for the cache). Called by `forwarding`; nothing is retried here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from gateway import envelopes, exchange, upstreamhttp, upstreams, usage

_MAX_ERROR_BODY = 64 * 1024  # an upstream error body longer than this is cut
_BAD_CREDENTIALS = frozenset({401, 403})  # the provider refused the stored key: its failure
CACHE_HEADER = "X-Llmctl-Cache"  # "hit" or "miss" on a reply the cache could hold


class _Relayed(web.StreamResponse):
    """A streamed response whose headers wait for its first body write and leave with it, in
    one write to the socket, as `web.Response`'s do (a plain StreamResponse sends them alone)."""

    _send_headers_immediately = False


@dataclasses.dataclass(slots=True)
class Opened:
    """An upstream reply whose status and first chunk arrived."""

    response: upstreamhttp.Reply
    first: bytes


async def relay(
    request: web.Request,
    opened: Opened,
    upstream: upstreams.Upstream,
    record: exchange.Exchange,
    *,
    client_asked_usage: bool = True,
) -> tuple[bool, web.StreamResponse]:
    """Answer ``request`` with ``opened``; returns whether the provider did its part, and the
    response. A client that went away ends the relay quietly (the provider is not blamed).
    Without ``client_asked_usage`` a stream's usage-only event is not passed on."""
    status = opened.response.status
    if status >= 400:
        return status not in _BAD_CREDENTIALS, await _error(opened, upstream)
    headers = opened.response.headers
    content_type = headers.get("content-type", "application/json")
    out = _Relayed(status=status, headers={"Content-Type": content_type})
    if "content-encoding" in headers:  # asked for none; relayed as sent, for the client
        out.headers["Content-Encoding"] = headers["content-encoding"]
    sse = content_type.startswith("text/event-stream")
    if sse:
        out.headers["Cache-Control"] = "no-cache"
    else:  # sent with its length: headers and body leave in one write, with no chunk framing
        out.content_length = opened.response.content_length
    if record.cache:
        out.headers[CACHE_HEADER] = record.cache
    await out.prepare(request)
    try:
        if sse:
            ok = await _events(request, out, opened, record, not client_asked_usage)
        else:
            ok = await _bytes(request, out, opened, record)
    except ConnectionResetError:  # the client left; the caller closes the upstream reply
        return True, out
    if not ok:
        record.error_type = "stream_interrupted"
    return ok, out


async def _error(opened: Opened, upstream: upstreams.Upstream) -> web.Response:
    """The provider's error reply, its body cut and redacted."""
    data = bytearray(opened.first)
    try:
        while len(data) <= _MAX_ERROR_BODY and (chunk := await opened.response.read()):
            data += chunk
    except upstreamhttp.UpstreamError:
        pass  # what arrived is enough to say what went wrong
    text = upstream.redact(bytes(data[:_MAX_ERROR_BODY]).decode("utf-8", "replace"))
    content_type = opened.response.headers.get("content-type", "application/json")
    return web.Response(
        status=opened.response.status,
        body=text.encode(),
        headers={"Content-Type": content_type},
    )


async def _events(
    request: web.Request,
    out: web.StreamResponse,
    opened: Opened,
    record: exchange.Exchange,
    strip: bool,
) -> bool:
    """Relay whole SSE events; on an upstream failure end with the error event. Once the
    headers are out, events are written straight from the upstream's read callback
    (`_piping`) while the client keeps up, and by awaited writes (which wait for a slow
    client) otherwise."""
    events = _Events(record, strip)
    reply = opened.response
    try:
        await out.write(events.take(opened.first))  # the headers leave with the first events
        sink = _piping(request, out, events)
        ended = False
        if sink is not None:
            reply.pipe(sink)
            ended = await reply.piped()
        while not ended:
            chunk = await reply.read()
            if chunk is None:
                break
            data = events.take(chunk)
            if data:
                await out.write(data)
    except upstreamhttp.UpstreamError as exc:
        message = (
            f"the provider's stream broke off after it started ({type(exc).__name__}); "
            "the reply is incomplete: retry the request"
        )
        await out.write(envelopes.stream_error(message))
        await out.write_eof()
        return False
    rest = events.rest()
    if rest:
        await out.write(rest)
    await out.write_eof()
    return True


_PIPE_LIMIT = 64 * 1024  # bytes waiting for the client above which piping stops


def _piping(
    request: web.Request, out: web.StreamResponse, events: _Events
) -> Callable[[bytes], bool] | None:
    """The sink that writes events to the client's socket as the provider's arrive, framed
    as the response is (chunked, or as they are for an HTTP/1.0 client); None when the
    response cannot be written that way (compressed, or no transport)."""
    transport = request.transport
    if transport is None or out.compression:
        return None
    chunked = out.headers.get("Transfer-Encoding", "").lower() == "chunked"

    def sink(chunk: bytes) -> bool:
        data = events.take(chunk)
        if not data:
            return True
        if transport.is_closing():
            return False  # the client left; its handler is being cancelled
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
        return transport.get_write_buffer_size() <= _PIPE_LIMIT

    return sink


class _Events:
    """Cuts a provider's SSE bytes into whole events, noting a usage and dropping the
    usage-only event when ``strip``."""

    def __init__(self, record: exchange.Exchange, strip: bool) -> None:
        self._record, self._strip = record, strip
        self._pending = b""

    def take(self, chunk: bytes) -> bytes:
        """The whole events ``chunk`` completes (empty when none), ready to write."""
        pending = self._pending + chunk if self._pending else chunk
        cut = pending.rfind(b"\n\n")
        if cut < 0:
            self._pending = pending
            return b""
        self._pending = pending[cut + 2 :]
        return self._kept(pending[: cut + 2])

    def rest(self) -> bytes:
        """What is left once the provider's reply ended (an event without its blank line)."""
        rest, self._pending = self._pending, b""
        return self._kept(rest) if rest else b""

    def _kept(self, events: bytes) -> bytes:
        if b'"usage"' not in events:
            return events
        kept = bytearray()
        for event in events.split(b"\n\n"):
            if not event:
                continue
            counted = usage.found(event)
            if counted is not None:
                self._record.usage = counted
                if self._strip and usage.only_usage(event):
                    continue
            kept += event + b"\n\n"
        return bytes(kept)


async def _bytes(
    request: web.Request, out: web.StreamResponse, opened: Opened, record: exchange.Exchange
) -> bool:
    """Relay a JSON reply; on an upstream failure drop the client's connection."""
    kept: bytearray | None = bytearray() if record.keep_reply else None
    tail = b""
    try:
        chunk: bytes | None = opened.first
        while chunk is not None:
            if chunk:
                await out.write(chunk)
                tail = (tail + chunk)[-usage.TAIL_BYTES :]
                if kept is not None:
                    kept += chunk
                    if len(kept) > record.keep_reply:
                        kept = None
            chunk = await opened.response.read()
    except upstreamhttp.UpstreamError:
        out.force_close()
        if request.transport is not None:
            request.transport.abort()
        return False
    await out.write_eof()
    record.usage = usage.found(tail)
    if kept is not None:
        record.reply = bytes(kept)
    return True
