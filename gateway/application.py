"""The gateway's aiohttp application: its routes, its shared HTTP client and how it listens.

`build` makes the application over a `runtimestate.resolver.Resolver` (any source: the
database and NATS in ``llmctl gateway``, a fixed snapshot in tests), a `access.Keys` hook and
the `exchange.Observer`s that read each finished request (metrics, accounting, logs, traces);
an admitted request is answered from the `replycache` when it holds the reply;
`start` listens on an address (port 0: any) with handler cancellation on, so a client that
disconnects cancels its handler and with it the upstream request. Every error is OpenAI's
envelope, unknown routes and wrong methods included. One HTTP client (`upstreamhttp`) serves
every upstream call and closes with the application.
Called by ``llmctl gateway`` and tests; it must not read settings files or the environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway import (
    access,
    catalog,
    envelopes,
    exchange,
    forwarding,
    inbound,
    relaying,
    replycache,
    steering,
)
from runtimestate import resolver


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The gateway's knobs (``llmctl gateway`` options)."""

    max_body_bytes: int = inbound.DEFAULT_MAX_BODY_BYTES
    limits: forwarding.Limits = dataclasses.field(default_factory=forwarding.Limits)
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 300.0  # the longest silence of a provider, first byte included
    cache: replycache.Settings = dataclasses.field(default_factory=replycache.Settings)


@dataclasses.dataclass(frozen=True, slots=True)
class Gateway:
    """What the handlers share."""

    resolver: resolver.Resolver
    keys: access.Keys
    forwarder: forwarding.Forwarder
    settings: Settings
    observers: tuple[exchange.Observer, ...] = ()
    cache: replycache.ReplyCache = dataclasses.field(
        default_factory=lambda: replycache.ReplyCache(replycache.OFF, time.monotonic)
    )


GATEWAY = web.AppKey("gateway", Gateway)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build(
    r: resolver.Resolver,
    *,
    keys: access.Keys | None = None,
    settings: Settings = Settings(),
    observers: Sequence[exchange.Observer] = (),
    metrics: Callable[[], bytes] | None = None,
) -> web.Application:
    """The application; its HTTP client is closed on cleanup (the resolver is the caller's).
    With ``metrics`` (Prometheus' text format), ``GET /metrics`` serves what it returns."""
    app = web.Application(middlewares=[_envelopes], client_max_size=settings.max_body_bytes)
    forwarder = forwarding.Forwarder(
        r, settings.limits, settings.connect_timeout_s, settings.read_timeout_s
    )
    app.cleanup_ctx.append(forwarder.session_context)
    cache = replycache.ReplyCache(settings.cache, time.monotonic)
    app[GATEWAY] = Gateway(
        r, keys or access.Open(), forwarder, settings, tuple(observers), cache=cache
    )
    for path in inbound.ENDPOINTS:
        app.router.add_post(path, _inference)
    app.router.add_get("/v1/models", _models)
    if metrics is not None:
        app.router.add_get("/metrics", functools.partial(_metrics, metrics))
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port``; returns the runner (call ``cleanup``) and the bound port.
    Raises OSError when the address cannot be bound."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
CLIENT_CLOSED = 499  # the status an exchange ends with when its client went away


async def _inference(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    record = exchange.Exchange(request.path, traceparent=request.headers.get("traceparent", ""))
    try:
        call = await inbound.read(request, gateway.settings.max_body_bytes)
        record.model, record.stream = call.model, call.stream
        record.grant = grant = await gateway.keys.admit(access.bearer(request), call.model)
        call = steering.steer(call, request.headers, grant)
        control = request.headers.get("Cache-Control", "")
        lookup = gateway.cache.consult(call.path, call.document, grant.scope, control)
        record.cache, record.keep_reply = lookup.state, lookup.keep_reply
        if lookup.body is not None:
            record.status = 200
            return _stored(lookup.body)
        response = await gateway.forwarder.forward(request, call, record)
        record.status = response.status
        gateway.cache.keep(lookup, response.status, record.reply)
        return response
    except envelopes.Refusal as refusal:
        record.status, record.error_type = refusal.status, refusal.kind
        return refusal.response()
    except asyncio.CancelledError:
        record.status, record.error_type = CLIENT_CLOSED, "client_closed"
        raise
    finally:
        record.finished = time.monotonic()
        exchange.notify(gateway.observers, record)


def _stored(body: bytes) -> web.Response:
    """A reply from the cache, marked as one."""
    headers = {"Content-Type": "application/json", relaying.CACHE_HEADER: replycache.HIT}
    return web.Response(body=body, headers=headers)


async def _models(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    try:
        allowed = gateway.keys.visible(access.bearer(request))
    except envelopes.Refusal as refusal:
        return refusal.response()
    return web.json_response(catalog.listing(gateway.resolver, allowed))


async def _metrics(render: Callable[[], bytes], _: web.Request) -> web.StreamResponse:
    return web.Response(body=render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


@web.middleware
async def _envelopes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such route, wrong method) in OpenAI's envelope."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = envelopes.NOT_FOUND if exc.status == 404 else envelopes.INVALID
        message = f"{request.method} {request.path}: {exc.reason}"
        if exc.status == 404:
            message += "; the gateway serves /v1/chat/completions, /v1/completions, "
            message += "/v1/embeddings and /v1/models"
        return envelopes.Refusal(exc.status, message, kind).response()
