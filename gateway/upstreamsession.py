"""The aiohttp client session that every upstream call of one gateway application shares.

`open_session` makes it: a keep-alive pool per provider with no cap on connections (the
resolver's in-flight counts and the providers bound the load, not a client pool), no cookies
(providers' APIs use none, and a shared jar would carry one reply's state into the next
request), no proxies from the environment, a connect timeout and a read timeout (the longest
silence of a provider, first byte included) and no total (a stream lasts as long as it
produces). aiohttp rather than httpx because ``benchmarks/gateway.py`` measured it: httpcore's
pool scans every pooled connection for each request, which at 64 concurrent requests cost the
gateway tens of milliseconds of CPU per request; aiohttp's pool takes a connection in constant
time. Called by `forwarding` while the application runs; it sends nothing itself, never logs.
"""

from __future__ import annotations

import aiohttp

# An idle pooled connection is closed after this: before vLLM's server (uvicorn, 5 s) closes it,
# so that a request is not sent down a connection the provider is closing at that moment.
KEEPALIVE_S = 4.0


def open_session(connect_timeout_s: float, read_timeout_s: float) -> aiohttp.ClientSession:
    """A new session; the caller closes it. Must be called with an event loop running."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        raise_for_status=False,
    )
