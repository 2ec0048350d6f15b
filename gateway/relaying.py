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
            ok = await _events(out, opened, record, not client_asked_usage)
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
    out: web.StreamResponse, opened: Opened, record: exchange.Exchange, strip: bool
) -> bool:
    """Relay whole SSE events; on an upstream failure end with the error event."""
    pending = opened.first
    try:
        while True:
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                await _write_events(out, pending[: cut + 2], record, strip)
                pending = pending[cut + 2 :]
            chunk = await opened.response.read()
            if chunk is None:
                break
            pending += chunk
    except upstreamhttp.UpstreamError as exc:
        message = (
            f"the provider's stream broke off after it started ({type(exc).__name__}); "
            "the reply is incomplete: retry the request"
        )
        await out.write(envelopes.stream_error(message))
        await out.write_eof()
        return False
    if pending:
        await _write_events(out, pending, record, strip)
    await out.write_eof()
    return True


async def _write_events(
    out: web.StreamResponse, events: bytes, record: exchange.Exchange, strip: bool
) -> None:
    """Write whole events, noting a usage and dropping the usage-only event when ``strip``."""
    if b'"usage"' not in events:
        await out.write(events)
        return
    kept = bytearray()
    for event in events.split(b"\n\n"):
        if not event:
            continue
        counted = usage.found(event)
        if counted is not None:
            record.usage = counted
            if strip and usage.only_usage(event):
                continue
        kept += event + b"\n\n"
    if kept:
        await out.write(bytes(kept))


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
