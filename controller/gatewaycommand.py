"""``llmctl gateway``: serve one OpenAI-compatible endpoint for the fleet until stopped.

Follows the runtime state with `Resolver.from_database` (the root ``--database-url``, and
``--nats-url`` with the NATS credentials when given; without NATS the status is re-read every
half second) and serves `gateway.application` on ``--listen`` (loopback by default), with the
reply cache of ``--cache-*`` (`controller.replycacheoptions`). Keys are
enforced (`gateway.enforcement`: a request needs a key made by ``llmctl key create``; limits
are shared with the other replicas over NATS); ``--allow-unauthenticated`` serves without keys,
admitting every request, and only on a loopback address. Metrics (``/metrics``), the request
log line and spans are built by `controller.gatewayobservers`; ``--profiles FILE`` keeps what
the resolver learned across restarts (`controller.gatewayprofiles`). Exit codes: 0 when stopped
(SIGTERM, SIGINT), 1 when the database, NATS, the address or the tracing settings cannot be
used, 2 for bad options; one line each, never a traceback. Imports the gateway and the
resolver inside the command only.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import pathlib
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from controller import gatewayprofiles, gctuning, replycacheoptions, runner

if TYPE_CHECKING:
    from aiohttp import web

    from controller import gatewayobservers
    from gateway import application, enforcement, keygate
    from runtimestate import resolver

DEFAULT_LISTEN = "127.0.0.1:8080"
_LOOPBACK_NAMES = frozenset({"localhost"})


class LogFormat(enum.StrEnum):
    """How the gateway writes its logs (the request line included) to standard error."""

    JSON = "json"
    CONSOLE = "console"


def gateway_command(
    ctx: typer.Context,
    listen: Annotated[
        str,
        typer.Option("--listen", envvar="LLMCTL_GATEWAY_LISTEN", help="host:port to serve on"),
    ] = DEFAULT_LISTEN,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes",
            envvar="LLMCTL_GATEWAY_MAX_BODY_BYTES",
            min=1,
            help="largest request body accepted (gateway_max_body_bytes); larger gets 413",
        ),
    ] = 4 * 1024 * 1024,
    attempts: Annotated[
        int,
        typer.Option(
            "--attempts",
            envvar="LLMCTL_GATEWAY_ATTEMPTS",
            min=1,
            help="providers tried per request at most (the choice, then fallbacks)",
        ),
    ] = 3,
    deadline: Annotated[
        float,
        typer.Option(
            "--deadline",
            envvar="LLMCTL_GATEWAY_DEADLINE_S",
            min=0.001,
            help="seconds a request may take, over every attempt, until its first byte",
        ),
    ] = 60.0,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="serve without keys, admitting every request (loopback --listen only)",
        ),
    ] = False,
    request_log: Annotated[
        bool,
        typer.Option(
            "--request-log/--no-request-log",
            envvar="LLMCTL_GATEWAY_REQUEST_LOG",
            help="log one gateway.request line per request (info)",
        ),
    ] = True,
    traces: Annotated[
        str,
        typer.Option(
            "--traces",
            envvar="OTEL_TRACES_EXPORTER",
            help="OpenTelemetry span exporters: otlp (OTEL_EXPORTER_OTLP_*), console, none",
        ),
    ] = "none",
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            envvar="LLMCTL_LOG_FORMAT",
            help="json or console (default: console on a terminal, else json)",
        ),
    ] = None,
    cache_ttl: replycacheoptions.TtlOpt = replycacheoptions.DEFAULT_TTL,
    cache_max_bytes: replycacheoptions.MaxBytesOpt = replycacheoptions.DEFAULT_MAX_BYTES,
    cache_entry: replycacheoptions.MaxEntryOpt = replycacheoptions.DEFAULT_ENTRY_BYTES,
    cache_shared: replycacheoptions.SharedOpt = False,
    profiles: Annotated[
        pathlib.Path | None,
        typer.Option(
            "--profiles",
            envvar="LLMCTL_GATEWAY_PROFILES",
            help="file keeping the resolver's learned latency and error figures across restarts",
        ),
    ] = None,
) -> None:
    """Serve one OpenAI-compatible endpoint for the fleet, routed by the resolver."""
    from controller import gatewayobservers, logs
    from gateway import application, forwarding

    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    host, port = _address(env, listen)
    if allow_unauthenticated and not _loopback(host):
        env.fail(
            f"--listen {listen} is not a loopback address and --allow-unauthenticated admits "
            "every request: anyone who can reach it could use the fleet; listen on 127.0.0.1, "
            "or drop --allow-unauthenticated to require keys"
        )
    try:
        exporters = gatewayobservers.traces(traces)
    except gatewayobservers.BadTraces as exc:
        env.fail(str(exc), exc.code)
    observing = functools.partial(
        gatewayobservers.build, request_log=request_log, exporters=exporters
    )
    fmt = log_format or (LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON)
    logs.configure("json" if fmt is LogFormat.JSON else "console", "info")
    cache = replycacheoptions.settings(env, cache_ttl, cache_max_bytes, cache_entry, cache_shared)
    kept = None if profiles is None else gatewayprofiles.ProfileFile(profiles, _stderr(env))
    refused = None if kept is None else kept.check()
    if refused is not None:
        env.fail(refused)
    settings = application.Settings(
        max_body_bytes=max_body_bytes,
        limits=forwarding.Limits(attempts=attempts, deadline_s=deadline),
        cache=cache,
    )
    try:
        runner.run_async(
            env,
            lambda: _serve(env, settings, host, port, allow_unauthenticated, observing, kept),
        )
    except OSError as exc:  # NATS refused or unreachable, or the address is taken
        env.fail(f"llmctl gateway cannot start: {exc}", 1)
    raise typer.Exit(0)


async def _serve(
    env: runner.Env,
    settings: application.Settings,
    host: str,
    port: int,
    open_access: bool,
    observing: Callable[[resolver.Resolver], gatewayobservers.Observing],
    kept: gatewayprofiles.ProfileFile | None = None,
) -> None:
    from gateway import application, enforcement
    from runtimestate import resolver

    r = await resolver.Resolver.from_database(
        env.database_url, env.nats_url, env.prefix, nats_auth=env.nats_auth
    )
    enforced = None
    watch = observing(r)
    if kept is not None:
        kept.restore(r)
    try:
        if not open_access:
            enforced = await enforcement.enforce(
                env.database_url, r.desired_state, nats_url=env.nats_url, prefix=env.prefix,
                nats_auth=env.nats_auth,
            )  # fmt: skip
        gate = None if enforced is None else enforced.gate
        observers = [gate, *watch.observers] if gate else list(watch.observers)
        app = application.build(
            r, settings=settings, keys=gate, observers=observers, metrics=watch.metrics
        )
        site, bound = await _listen(app, host, port)
        gctuning.tune()  # after the imports and the fleet's state: they live as long
    except BaseException:
        await _close(r, enforced)
        watch.close()
        raise
    stop = _stop_on_signals()  # before the announcement: a SIGTERM right after it is clean
    _announce(env, host, bound, gate)
    try:
        if kept is None:
            await stop.wait()
        else:
            async with kept.keep(r):
                await stop.wait()
    finally:
        await site.cleanup()
        await _close(r, enforced)
        watch.close()


async def _listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    from gateway import application

    try:
        return await application.start(app, host, port)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _close(r: resolver.Resolver, enforced: enforcement.Enforcement | None) -> None:
    try:
        if enforced is not None:
            await enforced.aclose()
    finally:
        await r.aclose()


def _announce(env: runner.Env, host: str, port: int, gate: keygate.KeyGate | None) -> None:
    shown = f"[{host}]" if ":" in host else host
    how = "no keys: every request is admitted" if gate is None else "keys enforced"
    env.err.print(f"llmctl gateway: serving http://{shown}:{port}/v1 ({how})", highlight=False)
    if gate is not None and not len(gate.book.keyring):
        env.err.print(
            "llmctl gateway: there are no keys yet, so every request gets 401; "
            "make one with: llmctl key create NAME",
            highlight=False,
        )


def _stderr(env: runner.Env) -> Callable[[str], None]:
    return lambda line: env.err.print(line, highlight=False, markup=False)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _address(env: runner.Env, listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        env.fail(f"--listen {listen!r}: give host:port, such as {DEFAULT_LISTEN} (port 0: any)")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
