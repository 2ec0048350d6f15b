"""HTTP plumbing shared by the adapters: a body-size cap, client construction, reply checks.

`CappedTransport` wraps any httpx transport (the real connection pool of `aiotransport`, or a
`MockTransport` in tests) and aborts a response whose body grows past a limit, so a broken or
hostile node cannot make the controller buffer gigabytes. NDJSON streams (Ollama pulls) are
capped per line instead of in total, because a healthy pull streams for hours. The Ollama
adapter hands the same transport to the official `ollama.AsyncClient`, so its replies are
capped too.

The reply checks (`decode_json`, `expect_mapping`, `required`, `optional_int`) raise
`MalformedReply`, the one exception the adapters' parsers raise for a reply that breaks the wire
contract; `failures` maps it to `errors.ProtocolError`. A ValueError, TypeError or KeyError
from the parsing code itself is a bug and is left to propagate.

Who calls it: the adapter modules in this package, nothing else. It must not classify errors
(that is `failures`), and must never log or echo request headers, which carry API keys.
"""

from __future__ import annotations

import functools
import http.cookiejar
import json
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from runtimestate.backends import aiotransport, base

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024  # ~2,000 listed models; show, metrics far less
IDENTITY_ENCODING = {"accept-encoding": "identity"}


class NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: backend APIs do not use cookies, and a controller
    talking to many nodes must not carry one reply's state into the next request. httpx hands
    every reply to its client's jar; the default jar parses the reply's headers for
    ``Set-Cookie`` each time, about a tenth of the client's CPU per request."""

    def extract_cookies(self, response: Any, request: urllib.request.Request) -> None:
        return None

    def add_cookie_header(self, request: urllib.request.Request) -> None:
        return None


class BodyTooLarge(Exception):
    """A response body (or one NDJSON line) exceeded the cap; `failures` maps it."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body exceeds {limit} bytes")
        self.limit = limit


class MalformedReply(Exception):
    """A backend's reply is not what its wire contract says (PROTOCOLS.md): not JSON, a field
    missing or of the wrong type. Raised only by the checks of a reply; `failures` maps it to
    `errors.ProtocolError`. The message names the field, never a header."""


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, *, per_line: bool) -> None:
        self._inner = inner
        self._limit = limit
        self._per_line = per_line

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0  # bytes in the body, or in the current line when capping per line
        async for chunk in self._inner:
            if self._per_line and b"\n" in chunk:
                first, *rest = chunk.split(b"\n")
                longest = max(seen + len(first), *(len(part) for part in rest))
                seen = len(rest[-1])
            else:
                seen += len(chunk)
                longest = seen
            if longest > self._limit:
                raise BodyTooLarge(self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    """Delegates to `inner`; responses longer than `max_body_bytes` raise `BodyTooLarge`
    while they are read. Closing is idempotent, so two clients may share one instance."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_body_bytes: int) -> None:
        self._inner = inner
        self._limit = max_body_bytes
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        if not isinstance(stream, httpx.AsyncByteStream):  # a sync-only test stream
            return response
        per_line = response.headers.get("content-type", "").startswith("application/x-ndjson")
        declared = response.headers.get("content-length", "")
        if not per_line and declared.isdigit() and int(declared) > self._limit:
            await stream.aclose()
            raise BodyTooLarge(self._limit)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(stream, self._limit, per_line=per_line),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._inner.aclose()


def httpx_timeout(timeouts: base.Timeouts) -> httpx.Timeout:
    return httpx.Timeout(
        connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.connect
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building a verifying context loads the CA bundle (~20 ms); one per process is enough,
    # and a fleet of 1,000 adapters must not pay it 1,000 times. Built on first use.
    return httpx.create_ssl_context()


def shared_session() -> aiotransport.SharedSession:
    """A connection pool for many adapters (the adapter pool owns one and closes it)."""
    return aiotransport.SharedSession(tls=_tls_context())


def capped(transport: httpx.AsyncBaseTransport | None, max_body_bytes: int) -> CappedTransport:
    """Wrap `transport` (default: a private aiohttp connection pool) in the size cap."""
    return CappedTransport(
        transport or aiotransport.AiohttpTransport(tls=_tls_context()), max_body_bytes
    )


def build_client(
    base_url: str,
    *,
    timeouts: base.Timeouts,
    transport: httpx.AsyncBaseTransport,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """One client per adapter, reused for every request (keep-alive). A path prefix in
    `base_url` is kept: httpx appends relative request paths to it. Compression is refused so
    the byte cap counts what is really decoded (no gzip bombs)."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx_timeout(timeouts),
        transport=transport,
        headers={**IDENTITY_ENCODING, **(headers or {})},
        follow_redirects=False,
        cookies=NoCookies(),
    )


def decode_json(body: bytes) -> Any:
    """Parse a JSON reply; `MalformedReply` when it is not JSON (or not UTF-8)."""
    try:
        return json.loads(body)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise MalformedReply(f"not JSON: {exc}") from exc


def expect_mapping(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else `MalformedReply` naming ``what``."""
    if not isinstance(value, Mapping):
        raise MalformedReply(f"{what} is not a JSON object")
    return value


def required(value: Mapping[str, Any], key: str, what: str) -> Any:
    """``value[key]``, or `MalformedReply` saying ``what`` lacks it."""
    if key not in value:
        raise MalformedReply(f"{what} has no {key!r}")
    return value[key]


def optional_int(value: Any) -> int | None:
    """An integer field, tolerating absence; anything else is a `MalformedReply`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedReply(f"expected an integer, got {type(value).__name__}")
    return value


def error_message(body: bytes) -> str:
    """The human message from any error body the backends send: vLLM's nested
    ``{"error":{"message"}}`` (>= 0.10.1, also OpenAI and Gemini) or flat
    ``{"object":"error","message"}`` (<= 0.10.0), Ollama's ``{"error":"..."}``, FastAPI's
    ``{"detail":...}``, or plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if not isinstance(parsed, Mapping):
        return text
    error = parsed.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    for key in ("message", "error", "detail"):
        if isinstance(parsed.get(key), str):
            return str(parsed[key])
    return text
