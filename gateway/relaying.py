"""Relaying a provider's reply to the client as it arrives, once its first byte is in hand.

`relay` takes an opened upstream reply (`Opened`: the response, its byte iterator, the first
chunk) and answers the client: an error status (one the gateway does not retry, a 400 say) with
its body redacted of the provider's key; a success relayed chunk by chunk. A stream
(``text/event-stream``) is written event by event, never buffered past the event being read, so
that when the provider fails mid-stream the client's stream ends cleanly with OpenAI's error
event and ``[DONE]`` (PROTOCOLS D.4); a JSON reply that breaks off mid-body closes the client's
connection, so no truncated body looks complete. Called by `forwarding`; nothing is retried here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
from aiohttp import web

from gateway import envelopes, upstreams

_MAX_ERROR_BODY = 64 * 1024  # an upstream error body longer than this is cut
_BAD_CREDENTIALS = frozenset({401, 403})  # the provider refused the stored key: its failure


@dataclasses.dataclass(slots=True)
class Opened:
    """An upstream reply whose status and first chunk arrived."""

    response: httpx.Response
    chunks: AsyncIterator[bytes]
    first: bytes


async def relay(
    request: web.Request, opened: Opened, upstream: upstreams.Upstream
) -> tuple[bool, web.StreamResponse]:
    """Answer ``request`` with ``opened``; returns whether the provider did its part, and the
    response. A client that went away ends the relay quietly (the provider is not blamed)."""
    status = opened.response.status_code
    if status >= 400:
        return status not in _BAD_CREDENTIALS, await _error(opened, upstream)
    content_type = opened.response.headers.get("content-type", "application/json")
    out = web.StreamResponse(status=status, headers={"Content-Type": content_type})
    sse = content_type.startswith("text/event-stream")
    if sse:
        out.headers["Cache-Control"] = "no-cache"
    await out.prepare(request)
    try:
        ok = await (_events(out, opened) if sse else _bytes(request, out, opened))
    except ConnectionResetError:  # the client left; the caller closes the upstream reply
        return True, out
    return ok, out


async def _error(opened: Opened, upstream: upstreams.Upstream) -> web.Response:
    """The provider's error reply, its body cut and redacted."""
    data = bytearray(opened.first)
    try:
        async for chunk in opened.chunks:
            data += chunk
            if len(data) > _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # what arrived is enough to say what went wrong
    text = upstream.redact(bytes(data[:_MAX_ERROR_BODY]).decode("utf-8", "replace"))
    content_type = opened.response.headers.get("content-type", "application/json")
    return web.Response(
        status=opened.response.status_code,
        body=text.encode(),
        headers={"Content-Type": content_type},
    )


async def _events(out: web.StreamResponse, opened: Opened) -> bool:
    """Relay whole SSE events; on an upstream failure end with the error event."""
    pending = opened.first
    try:
        while True:
            cut = pending.rfind(b"\n\n")
            if cut >= 0:
                await out.write(pending[: cut + 2])
                pending = pending[cut + 2 :]
            chunk = await anext(opened.chunks, None)
            if chunk is None:
                break
            pending += chunk
    except httpx.HTTPError as exc:
        message = (
            f"the provider's stream broke off after it started ({type(exc).__name__}); "
            "the reply is incomplete: retry the request"
        )
        await out.write(envelopes.stream_error(message))
        await out.write_eof()
        return False
    if pending:
        await out.write(pending)
    await out.write_eof()
    return True


async def _bytes(request: web.Request, out: web.StreamResponse, opened: Opened) -> bool:
    """Relay a JSON reply; on an upstream failure drop the client's connection."""
    try:
        if opened.first:
            await out.write(opened.first)
        async for chunk in opened.chunks:
            await out.write(chunk)
    except httpx.HTTPError:
        out.force_close()
        if request.transport is not None:
            request.transport.abort()
        return False
    await out.write_eof()
    return True
