"""An httpx transport on aiohttp: the adapters' connection pool.

`AiohttpTransport` keeps the httpx API that the official `ollama.AsyncClient` and `HttpApi` are
written against (they build `httpx.Request`s and read `httpx.Response`s) and sends the bytes
through an `aiohttp.ClientSession`, with keep-alive connections pooled per host; it costs a
fraction of httpx's own pool's CPU per request (README, performance: `benchmarks/observe.py`).

Semantics kept from httpx, so `failures` and the adapters' error mapping see no difference:

- timeouts come from each request's ``extensions["timeout"]``: ``connect`` bounds opening a
  connection, ``connect + pool`` bounds getting one, ``read`` bounds every wait for data; there
  is no write timeout (request bodies are a few hundred bytes);
- aiohttp failures are raised as the httpx exception of the same situation (`ConnectError`,
  `ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`, `ReadError`, ...), chained;
- bodies are returned undecoded and streamed chunk by chunk, so `transport.CappedTransport` can
  wrap this transport and cap what is read;
- no redirects, cookies, proxies from the environment or automatic headers.

`SharedSession` is the aiohttp session that `adapters.AdapterPool` owns, lends to every adapter
and closes; a transport built without one owns a private session and closes it itself.

Who calls it: `transport.capped` (the default inner transport) and `adapters.AdapterPool`.
It must not classify errors (that is `failures`) and must never log request headers.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx
import multidict
import yarl

# httpx always sends these itself; aiohttp must neither add nor replace them.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
DEFAULT_LIMIT_PER_HOST = 100  # as httpx's per-client default of max_connections


class SharedSession:
    """One `aiohttp.ClientSession`, created on first use (it must be made inside the loop).

    ``limit_per_host`` bounds the connections to one host:port (0: unbounded); the total is
    unbounded, because callers bound their concurrency (the cycle's semaphore, pull slots).
    """

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        limit_per_host: int = DEFAULT_LIMIT_PER_HOST,
        keepalive_s: float = 15.0,
    ) -> None:
        self._tls = tls
        self._limit_per_host = limit_per_host
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def session(self) -> aiohttp.ClientSession:
        """The session, opened on first call. Raises httpx.TransportError once closed."""
        if self._session is None:
            if self._closed:
                raise httpx.TransportError("the connection pool is closed")
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self._limit_per_host,
                keepalive_timeout=self._keepalive_s,
                ssl=self._tls if self._tls is not None else True,
                timeout_ceil_threshold=math.inf,  # honour timeouts exactly, not rounded up
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,  # httpx decodes; the cap counts bytes on the wire
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent; later requests raise."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through `shared`, or else a private session (verifying TLS with
    `tls`) that `aclose()` closes."""

    def __init__(
        self, shared: SharedSession | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self._owned = shared is None
        self._shared = shared if shared is not None else SharedSession(tls=tls)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = _timeout(request.extensions.get("timeout"))
        body = await request.aread()
        headers = multidict.CIMultiDict(request.headers.multi_items())
        try:
            reply = await self._shared.session().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                data=body or None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except Exception as exc:  # every aiohttp failure becomes its httpx equivalent
            raise _mapped(exc, request) from exc
        return httpx.Response(
            status_code=reply.status,
            headers=list(reply.raw_headers),
            stream=_ReplyStream(reply, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": _reason(reply)},
        )

    async def aclose(self) -> None:
        """Close the private session; a shared one is closed by its owner."""
        if self._owned:
            await self._shared.aclose()


class _ReplyStream(httpx.AsyncByteStream):
    def __init__(self, reply: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._reply = reply
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._reply.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        # A fully read reply gives its connection back to the pool; an abandoned one (a pull
        # closed early) closes it, which is how Ollama learns the puller went away.
        if self._reply.content.at_eof():
            self._reply.release()
        else:
            self._reply.close()


def _reason(reply: aiohttp.ClientResponse) -> bytes:
    return (reply.reason or "").encode("latin-1", errors="replace")


@functools.lru_cache(maxsize=64)
def _client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    acquire = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=acquire, sock_connect=connect, sock_read=read)


def _timeout(given: object) -> aiohttp.ClientTimeout:
    if not isinstance(given, Mapping):
        return _client_timeout(None, None, None)
    return _client_timeout(given.get("connect"), given.get("read"), given.get("pool"))


def _mapped(exc: Exception, request: httpx.Request) -> Exception:
    """The httpx exception for an aiohttp failure; anything else is returned unchanged."""
    text = str(exc) or type(exc).__name__
    match exc:
        case httpx.HTTPError():
            return exc
        case aiohttp.ConnectionTimeoutError():
            return httpx.ConnectTimeout(text, request=request)
        case aiohttp.ServerTimeoutError() | TimeoutError():  # sock_read: no data in time
            return httpx.ReadTimeout(text, request=request)
        case aiohttp.ClientConnectorError():  # refused, unreachable, DNS, TLS handshake
            return httpx.ConnectError(text, request=request)
        case aiohttp.ServerDisconnectedError() | aiohttp.ClientPayloadError():
            return httpx.RemoteProtocolError(text, request=request)
        case aiohttp.ClientResponseError():  # an unparseable status line or header
            return httpx.RemoteProtocolError(text, request=request)
        case aiohttp.ClientConnectionError() | OSError():  # reset or broken mid-exchange
            return httpx.ReadError(text, request=request)
        case aiohttp.InvalidURL():
            return httpx.InvalidURL(text)
        case aiohttp.ClientError():
            return httpx.TransportError(text, request=request)
    return exc
