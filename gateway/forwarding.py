"""Forwarding one checked call to the providers the resolver chose, failing over before the
first byte.

`Forwarder.forward` resolves the call (`routing`), then tries the choice and its
fallbacks (`Resolution.providers`) in order: a connection error, a timeout, a 408, 429 or 5xx,
or a reply that breaks off before its first byte sends the call to the next provider, at most
`Limits.attempts` providers and within `Limits.deadline_s` in all. Each attempt is counted in
flight (`Resolver.begin`/`end`) and its outcome recorded (`record_outcome`, latency to the first
byte), so the cooldown and the adaptive policy learn from live traffic; a client that goes away
cancels the attempt, which is then recorded neither way. Once the first byte is in hand,
`relaying` answers and nothing is retried. The calls share one `upstreamhttp.Client` (its
keep-alive connections), open while the application runs (`Forwarder.session_context`). Called by
`application`; logs backends and reasons, never a body or a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway import envelopes, exchange, inbound, relaying, routing, upstreamhttp, upstreams
from runtimestate import credentials, echo, resolver

log = structlog.get_logger(__name__)

_RETRIED = frozenset({408, 429})


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """How hard one request tries: providers tried at most, and seconds before a first byte."""

    attempts: int = 3
    deadline_s: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """Why one attempt failed before its first byte."""

    backend: str
    reason: str
    status: int | None = None
    timed_out: bool = False


def retried(status: int) -> bool:
    """Whether a reply with ``status`` goes to the next provider."""
    return status >= 500 or status in _RETRIED


class Forwarder:
    """Sends calls through one shared HTTP client; one per gateway application."""

    def __init__(
        self,
        r: resolver.Resolver,
        limits: Limits,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 300.0,
    ) -> None:
        self._r = r
        self._limits = limits
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self._client: upstreamhttp.Client | None = None

    async def session_context(self, _: web.Application) -> AsyncIterator[None]:
        """An aiohttp ``cleanup_ctx``: the shared client, open while the application runs."""
        self._client = upstreamhttp.Client(*self._timeouts)
        try:
            yield
        finally:
            await self._client.aclose()

    async def forward(
        self, request: web.Request, call: inbound.Call, record: exchange.Exchange
    ) -> web.StreamResponse:
        """Answer ``request``, noting each attempt in ``record``; raises `envelopes.Refusal`
        when no provider could."""
        resolution = routing.resolve(self._r, call)
        deadline = time.monotonic() + self._limits.deadline_s
        failures: list[Failure] = []
        for provider in itertools.islice(resolution.providers(), self._limits.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            result = await self._attempt(request, call, provider, remaining, record)
            if not isinstance(result, Failure):
                return result
            failures.append(result)
            log.info(
                "gateway.attempt_failed",
                model=call.model,
                backend=result.backend,
                reason=result.reason,
            )
        raise _exhausted(call, failures)

    async def _attempt(
        self,
        request: web.Request,
        call: inbound.Call,
        provider: resolver.Provider,
        remaining: float,
        record: exchange.Exchange,
    ) -> web.StreamResponse | Failure:
        r = self._r
        attempt = exchange.Attempt(provider.backend, provider.model, time.monotonic())
        record.attempts.append(attempt)
        try:
            upstream = upstreams.Upstream.of(provider)
        except credentials.CredentialError as exc:
            r.record_outcome(provider, False, 0.0)
            attempt.reason = f"its credentials cannot be read: {exc}"
            return Failure(provider.backend, attempt.reason)
        r.begin(provider)
        try:
            async with contextlib.AsyncExitStack() as stack:
                opened = await self._open(stack, upstream, call, provider, remaining)
                now = time.monotonic()
                attempt.latency_s = latency = now - attempt.started
                if isinstance(opened, Failure):
                    r.record_outcome(provider, False, latency)
                    attempt.reason, attempt.status = opened.reason, opened.status
                    return opened
                record.first_byte = now
                attempt.status = opened.response.status
                ok, response = await relaying.relay(
                    request, opened, upstream, record, client_asked_usage=call.asked_usage
                )
                attempt.ok = ok
                r.record_outcome(provider, ok, latency)
                return response
        finally:
            r.end(provider)

    async def _open(
        self,
        stack: contextlib.AsyncExitStack,
        upstream: upstreams.Upstream,
        call: inbound.Call,
        provider: resolver.Provider,
        remaining: float,
    ) -> relaying.Opened | Failure:
        """Send the call; the reply once its status and first chunk arrived, or a Failure.
        The reply's connection is closed with ``stack`` (back to the pool when read whole)."""
        assert self._client is not None, "the application is not running"
        deadline = asyncio.get_running_loop().time() + remaining
        try:
            reply = await self._client.post(
                upstream.url(call.path), call.body_for(provider.model), upstream.headers, deadline
            )
            stack.callback(reply.close)
            if retried(reply.status):
                return Failure(provider.backend, f"HTTP {reply.status}", reply.status)
            first = await reply.read() or b""
        except TimeoutError:  # the client's connect and read timeouts, and the deadline
            return Failure(provider.backend, "timed out", timed_out=True)
        except upstreamhttp.UpstreamError as exc:
            return Failure(provider.backend, f"failed: {exc.what}")
        return relaying.Opened(reply, first)


def _exhausted(call: inbound.Call, failures: list[Failure]) -> envelopes.Refusal:
    """The answer when no provider produced a first byte."""
    tried = "; ".join(f"{f.backend}: {f.reason}" for f in failures) or "no time was left"
    if failures and all(f.status == 429 for f in failures):
        return envelopes.Refusal(
            429,
            f"every provider of {echo.quoted(call.model)} is rate limited ({tried}); retry later",
            "rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": "1"},
        )
    if not failures or failures[-1].timed_out:
        return envelopes.Refusal(
            504,
            f"no provider of {echo.quoted(call.model)} answered in time ({tried})",
            envelopes.SERVER,
        )
    return envelopes.Refusal(
        502,
        f"every provider tried for {echo.quoted(call.model)} failed ({tried})",
        envelopes.SERVER,
    )
