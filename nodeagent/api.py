"""The node agent's HTTP API, version 1: what the controller calls on a GPU host.

Built by `build(cache, token=...)`; `serve(...)` runs it until SIGTERM or Ctrl-C (called by
``llmctl node serve``, `controller.node`), binding loopback unless told otherwise.
JSON in and out; every error is ``{"error": "<what and the fix>", "class": "<kind>"}``. Every
route but ``/v1/health`` needs ``Authorization: Bearer <token>`` (`nodeagent.auth`); an agent
started without a token (loopback only) answers everyone.

=======  ==========================  ===================================================
Method   Path                        Answer
=======  ==========================  ===================================================
GET      /v1/health                  ``{"status": "ok"}``; open, no token needed
GET      /v1/info                    ``{"api": "v1", "version", "cache_dir", "disk":
                                     {"total", "free"}}``
GET      /v1/weights                 ``{"weights": [{"name", "source", "path", "size",
                                     "commit", "refs", "commits"}, ...]}``
GET      /v1/weights/size            ``?source=org/name[&revision=main]``: ``{"bytes",
                                     "present", "commit"}``: a pull's total and the bytes
                                     already cached (errors as a pull's, before the stream)
POST     /v1/weights/pull            body ``{"source": "org/name" | "/abs/dir",
                                     "revision": "main"}``; NDJSON progress (below)
DELETE   /v1/weights/{name}          ``{"deleted": name}``; 404 when absent; 409 ``in_use``
                                     (with ``instances``) while an instance runs from them.
                                     A local directory's name is its path:
                                     ``/v1/weights//srv/m``
GET      /v1/inventory               ``{"gpus": [{"index", "name", "memory", "holder"}],
                                     "free": N}``; ``holder`` is an instance name or null
GET      /v1/instances               ``{"instances": [instance, ...]}``, by name
GET      /v1/instances/{name}        one instance: ``{"name", "path", "state", "port",
                                     "base_url", "gpus", "pid", "restarts", "last_error",
                                     "log_tail", "argv", "started_at", "adopted",
                                     "weights", "engine", "gpus_requested", "adapters":
                                     [{"name", "parent", "path"}]}``; 404
PUT      /v1/instances/{name}        body ``{"weights": cached name, "engine": {...},
                                     "gpus": N, "gpu_memory": "40GiB"}``: starts it (201;
                                     200 when it runs with that spec already)
DELETE   /v1/instances/{name}        ``{"stopped": name}``: the process group is gone; 404
PUT      /v1/instances/{name}/       body ``{"source", "revision"}``: pulls a LoRA adapter
         adapters/{adapter}          and loads it into the instance (`nodeagent.loras`)
DELETE   /v1/instances/{name}/       ``{"unloaded": adapter}``; 404 when not loaded
         adapters/{adapter}
=======  ==========================  ===================================================

Instances (`nodeagent.instanceapi`, served when the agent has a supervisor): ``state`` is
``starting``, ``ready``, ``CrashLoopBackOff`` (``log_tail`` has the log's last lines) or
``stopping``; ``base_url`` is what an OpenAI client takes; ``weights``, ``engine`` (every
field, defaults included) and ``gpus_requested`` are the spec it runs (null for an instance
adopted from a previous agent until a PUT with the same spec). A PUT's ``engine`` takes
``max_model_len``, ``tensor_parallel_size``, ``gpu_memory_utilization``, ``dtype``,
``quantization``, ``enable_lora``, ``extra_args`` (`nodeagent.command`); unknown fields or wrong
types are 400 ``invalid``. Refusals: 409 ``weights_absent`` (pull them first), 409
``unplaceable`` with ``needed`` and ``free`` GPU counts ("needs 1 GPU, 0 free": GPUs are held,
not storage, so not 507), 409 ``conflict`` (the name runs another spec: DELETE it first), 500
``start_failed`` (the command cannot be run).

Pull, like Ollama's ``/api/pull``: ``200`` with ``application/x-ndjson`` lines
``{"status": "pulling org/name@main", "completed": N, "total": M}`` (N only goes up), then
``{"status": "success", "weights": {...}}`` or, when the pull fails midway, an error line
``{"error", "class"}`` (classes of `nodeagent.weights.ErrorKind`). A failure known before the
first byte is a plain JSON error with its status instead: 400 ``invalid`` (a bad name, revision,
path or body), 507 ``insufficient_disk`` (with ``needed`` and ``free`` bytes), 422 ``permanent``
(missing or private repo, unknown revision: the hub's reason), 502 ``transient`` (hub
unreachable or 5xx). A gated repo's info is public: its refusal is the error line after the first
progress line.

Clients pulling the same source and revision at once share one pull (`nodeagent.pulls`). When
the last of them goes away mid-pull (the controller cancels a download by closing its stream),
the pull stops within a network read (`nodeagent.cancellation`): files already downloaded stay
in the cache and the next pull skips them; the file in flight starts again from byte 0 (the
client deletes its partial file). Stopping the agent waits for pulls in flight. Imports nothing of
ours but `nodeagent`; never logs or echoes the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import Callable
from importlib import metadata
from typing import Any

from aiohttp import typedefs, web

from nodeagent import auth, instanceapi, instances, loras, progress, pulls, record, weights

VERSION = "v1"
HEALTH = f"/{VERSION}/health"
NDJSON = "application/x-ndjson"
_BEFORE_STREAM = {
    weights.ErrorKind.INVALID: 400,
    weights.ErrorKind.PERMANENT: 422,
    weights.ErrorKind.INSUFFICIENT_DISK: 507,
    weights.ErrorKind.TRANSIENT: 502,
}
_CACHE = web.AppKey("cache", weights.Cache)
_DISK = web.AppKey("disk", object)
_PULLS = web.AppKey("pulls", pulls.Pulls)
_PULL_EXAMPLE = 'send {"source": "org/name", "revision": "main"}'
_GONE_POLL = 0.1  # seconds between looks at whether a pull's client is still there
_SHUTDOWN_TIMEOUT = 5.0  # seconds an open request gets once the agent is told to stop


class ConfigurationError(ValueError):
    """The agent cannot start as asked; the message names the option and the fix."""


def build(
    cache: weights.Cache,
    *,
    token: str | None,
    disk_usage: weights.DiskUsageFn = shutil.disk_usage,
    supervisor: instances.Supervisor | None = None,
) -> web.Application:
    """The API over `cache` and `supervisor` (its instance routes only when given).

    `token` None answers everyone (the caller binds loopback then). The application opens the
    supervisor when it starts and closes it (every instance stopped) when it stops.
    """
    middlewares: list[typedefs.Middleware] = [_json_errors]
    if token is not None:
        middlewares.append(auth.middleware(token, {HEALTH}))
    app = web.Application(middlewares=middlewares)
    app[_CACHE] = cache
    app[_DISK] = disk_usage
    app[_PULLS] = pulls.Pulls(cache)
    app.router.add_get(HEALTH, health)
    app.router.add_get(f"/{VERSION}/info", info)
    app.router.add_get(f"/{VERSION}/weights", list_weights)
    app.router.add_get(f"/{VERSION}/weights/size", size)
    app.router.add_post(f"/{VERSION}/weights/pull", pull)
    app.router.add_delete(f"/{VERSION}/weights/{{name:.+}}", delete)
    if supervisor is not None:
        loras.register(app, supervisor, app[_PULLS])  # first: instance names take slashes
        instanceapi.register(app, supervisor, cache)
    return app


def error(message: str, kind: str, status: int, **extra: Any) -> web.Response:
    """The API's error body: what went wrong and the fix, and its class."""
    return web.json_response({"error": message, "class": kind, **extra}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """aiohttp's own 404 and 405 as JSON errors, like every other answer."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        hint = f"see the routes of API {VERSION} in the README"
        return error(
            f"{request.method} {request.path}: {exc.reason}: {hint}", "invalid", exc.status
        )


async def health(request: web.Request) -> web.Response:
    """Liveness: the agent answers."""
    return web.json_response({"status": "ok"})


async def info(request: web.Request) -> web.Response:
    """The agent's version, API version, cache directory and its disk."""
    cache = request.app[_CACHE]
    cache.root.mkdir(parents=True, exist_ok=True)
    usage: Any = request.app[_DISK]
    disk = await asyncio.to_thread(usage, cache.root)
    return web.json_response(
        {
            "api": VERSION,
            "version": metadata.version("llmctl"),
            "cache_dir": str(cache.root),
            "disk": {"total": disk.total, "free": disk.free},
        }
    )


async def list_weights(request: web.Request) -> web.Response:
    """Every cached repo and recorded local directory."""
    found = await request.app[_CACHE].list()
    return web.json_response({"weights": [describe(w) for w in found]})


async def delete(request: web.Request) -> web.Response:
    """Remove one repo's cache folder or forget one local directory; not while in use."""
    name = request.match_info["name"]
    cache = request.app[_CACHE]
    found = [w for w in await cache.list() if w.name == name]
    running = instanceapi.users(request.app, found[0], cache.hub) if found else []
    if running:
        return error(
            f"weights {name!r} are in use by instance(s) {', '.join(running)}: "
            "stop them first (DELETE /v1/instances/NAME)",
            "in_use",
            409,
            instances=running,
        )
    try:
        removed = await cache.delete(name)
    except weights.WeightsError as exc:
        return error(str(exc), exc.kind.value, 400)
    if not removed:
        return error(f"no weights named {name!r} in the cache: see GET /v1/weights", "absent", 404)
    return web.json_response({"deleted": name})


async def size(request: web.Request) -> web.Response:
    """What a pull of ``?source=`` (at ``&revision=``) would take, and what is cached."""
    source = request.query.get("source")
    if not source:
        return error("give the repo to size: ?source=org/name[&revision=main]", "invalid", 400)
    try:
        found = await request.app[_CACHE].size(source, request.query.get("revision"))
    except weights.WeightsError as exc:
        return _refusal(exc)
    return web.json_response(
        {"bytes": found.total, "present": found.cached, "commit": found.commit}
    )


async def pull(request: web.Request) -> web.StreamResponse:
    """Pull weights, streaming NDJSON progress once the first byte count is known."""
    try:
        source, revision = await pulls.requested(request, _PULL_EXAMPLE)
    except pulls.BadRequest as exc:
        return error(str(exc), "invalid", 400)
    shared = request.app[_PULLS]
    waiter = shared.join(source, revision)
    try:
        return await _stream_pull(request, waiter, source, revision)
    finally:
        shared.leave(waiter)  # the last client to leave stops the pull (module docstring)


async def _stream_pull(
    request: web.Request, waiter: pulls.Waiter, source: str, revision: str | None
) -> web.StreamResponse:
    updates, task = waiter.updates, waiter.task
    first = await _first(updates, task)
    if first is None:  # done before any progress: the refusals known up front
        failure = task.exception()
        if isinstance(failure, weights.WeightsError):
            return _refusal(failure)
        first = progress.Progress(0, 0)  # cannot happen today: a pull reports before success
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    label = f"pulling {source}" + ("" if revision is None else f"@{revision}")
    stream = _Stream(response)
    await stream.send({"status": label, "completed": first.completed, "total": first.total})
    while not (task.done() and updates.empty()):
        if stream.gone or request.transport is None:  # the client left
            return response
        step = await _first(updates, task, within=_GONE_POLL)
        if step is not None:
            await stream.send({"status": label, "completed": step.completed, "total": step.total})
    await stream.send(_outcome(task))
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


class _Stream:
    """NDJSON lines to a client that may leave; after it does, lines are dropped."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.gone = False

    async def send(self, line: dict[str, Any]) -> None:
        if self.gone:
            return
        try:
            await self.response.write(json.dumps(line).encode() + b"\n")
        except ConnectionError:  # the client left: `pull` leaves the shared pull
            self.gone = True


async def _first(
    updates: asyncio.Queue[progress.Progress],
    task: asyncio.Future[weights.Weights],
    within: float | None = None,
) -> progress.Progress | None:
    """The next progress value; None when the pull ended with no value left, or after
    `within` seconds without one."""
    if not updates.empty():
        return updates.get_nowait()
    getter = asyncio.ensure_future(updates.get())
    waited: set[asyncio.Future[Any]] = {getter, task}
    await asyncio.wait(waited, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    return updates.get_nowait() if not updates.empty() else None


def _outcome(task: asyncio.Future[weights.Weights]) -> dict[str, Any]:
    failure = task.exception()
    if failure is None:
        return {"status": "success", "weights": describe(task.result())}
    if isinstance(failure, weights.WeightsError):
        return {"error": str(failure), "class": failure.kind.value}
    raise failure  # a bug: aiohttp logs it with its traceback and cuts the stream


def _refusal(failure: weights.WeightsError) -> web.Response:
    extra = {}
    if failure.kind is weights.ErrorKind.INSUFFICIENT_DISK:
        extra = {"needed": failure.needed, "free": failure.free}
    return error(str(failure), failure.kind.value, _BEFORE_STREAM[failure.kind], **extra)


def describe(found: weights.Weights) -> dict[str, Any]:
    """One cache entry as the API shows it."""
    return {
        "name": found.name,
        "source": found.source,
        "path": str(found.path),
        "size": found.size,
        "commit": found.commit,
        "refs": dict(found.refs),
        "commits": list(found.commits),
    }


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    token: str | None,
    announce: Callable[[str], None],
) -> None:
    """Serve `app` on `host:port` until SIGTERM or SIGINT; `announce(url)` once it listens.

    Raises ConfigurationError, before binding, for a non-loopback `host` without a token, and
    when the address cannot be bound.
    """
    check_host(host, token)
    asyncio.run(_serve(app, host, port, announce))


def check_host(host: str, token: str | None) -> None:
    """Raises ConfigurationError for a non-loopback `host` without a token."""
    if token is None and not auth.is_loopback(host):
        raise ConfigurationError(
            f"--host {host!r} is not a loopback address and no token is set: give --token-file "
            f"or set {auth.ENV_VAR}, or bind 127.0.0.1"
        )


async def _serve(
    app: web.Application, host: str, port: int, announce: Callable[[str], None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    try:
        await runner.setup()  # opens the supervisor: adopts or stops recorded instances
    except record.RecordError as exc:
        raise ConfigurationError(f"{exc} (or give another --state-dir)") from exc
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {reason}: pick another --port or --host"
            ) from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{bound}")
        await stop.wait()
    finally:
        await runner.cleanup()
