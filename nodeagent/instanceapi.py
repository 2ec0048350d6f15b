"""The node agent's instance and GPU routes: what `nodeagent.api` serves for ``vllm serve``.

`register(app, supervisor, cache)` adds ``GET /v1/inventory``, ``GET /v1/instances``,
``GET|PUT|DELETE /v1/instances/{name}`` to the agent's application (`nodeagent.api.build` calls
it), opens the supervisor when the application starts (adopting or stopping what a previous
agent left, `nodeagent.instances`) and closes it when the application stops (every instance's
process group ended). `users(app, name)` says which instances run from cached weights, so the
weights route refuses to delete them. A PUT body is checked strictly (unknown fields, wrong
types: 400) and its weights must already be in the cache (409); the supervisor decides the rest.
Must not decide what to run (the controller does) nor touch processes itself.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from aiohttp import web

from nodeagent import command, gpus, instance, instances, loras, names, weights

SUPERVISOR = web.AppKey("supervisor", instances.Supervisor)
_CACHE = web.AppKey("instance_cache", weights.Cache)
_FIELDS = {"weights", "engine", "gpus", "gpu_memory"}
_ENGINE: dict[str, tuple[type, ...]] = {
    "max_model_len": (int,),
    "tensor_parallel_size": (int,),
    "gpu_memory_utilization": (int, float),
    "dtype": (str,),
    "quantization": (str,),
    "enable_lora": (bool,),
    "extra_args": (list,),
}
_EXAMPLE = (
    'send {"weights": "org/name" or "/abs/dir", "engine": {"max_model_len": 4096}, "gpus": 1, '
    '"gpu_memory": "40GiB"}'
)


class BadBody(ValueError):
    """A PUT body the agent refuses (400); the message names the field and the fix."""


def register(app: web.Application, supervisor: instances.Supervisor, cache: weights.Cache) -> None:
    """Adds the routes over `supervisor`, opened on start and closed on stop with `app`."""
    app[SUPERVISOR] = supervisor
    app[_CACHE] = cache
    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
    app.router.add_get("/v1/inventory", inventory)
    app.router.add_get("/v1/instances", list_instances)
    app.router.add_get("/v1/instances/{name:.+}", get_instance)
    app.router.add_put("/v1/instances/{name:.+}", put_instance)
    app.router.add_delete("/v1/instances/{name:.+}", delete_instance)


async def _open(app: web.Application) -> None:
    await app[SUPERVISOR].open()


async def _close(app: web.Application) -> None:
    await app[SUPERVISOR].close()


def users(app: web.Application, found: weights.Weights, hub: pathlib.Path) -> list[str]:
    """The names of the instances that run from `found` (cached under `hub`), if any."""
    supervisor = app.get(SUPERVISOR)
    if supervisor is None:
        return []
    root = hub / names.repo_folder(found.name) if found.source == "hub" else found.path
    return [s.name for s in supervisor.list() if pathlib.Path(s.path).is_relative_to(root)]


def _error(message: str, kind: str, status: int, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "class": kind, **extra}, status=status)


async def inventory(request: web.Request) -> web.Response:
    """The node's GPUs, each with its memory and the instance holding it (or null)."""
    held = request.app[SUPERVISOR].inventory
    holder_of = {i: name for name, indices in held.holders().items() for i in indices}
    shown = [
        {
            "index": g.index,
            "name": g.name,
            "memory": g.memory_bytes,
            "holder": holder_of.get(g.index),
        }
        for g in held.gpus
    ]
    return web.json_response({"gpus": shown, "free": len(held.free())})


async def list_instances(request: web.Request) -> web.Response:
    """Every instance, by name."""
    found = request.app[SUPERVISOR].list()
    served = await loras.served_by(request.app, found)
    return web.json_response(
        {"instances": [describe(s, a) for s, a in zip(found, served, strict=True)]}
    )


async def get_instance(request: web.Request) -> web.Response:
    """One instance, or 404."""
    name = request.match_info["name"]
    found = request.app[SUPERVISOR].get(name)
    if found is None:
        return _absent(name)
    return web.json_response(describe(found, await loras.served(request.app, found)))


async def delete_instance(request: web.Request) -> web.Response:
    """Stops an instance (its whole process group) and frees its GPUs; 404 when absent."""
    name = request.match_info["name"]
    if not await request.app[SUPERVISOR].stop(name):
        return _absent(name)
    return web.json_response({"stopped": name})


async def put_instance(request: web.Request) -> web.Response:
    """Starts an instance of the body's model under the path's name; 201, or 200 when it runs."""
    name = request.match_info["name"]
    supervisor = request.app[SUPERVISOR]
    try:
        spec = await _spec(request, name)
    except BadBody as exc:
        return _error(str(exc), "invalid", 400)
    if isinstance(spec, web.Response):
        return spec
    existed = supervisor.get(name) is not None
    try:
        status = await supervisor.start(spec)
    except command.SpecError as exc:
        return _error(str(exc), "invalid", 400)
    except gpus.Unplaceable as exc:
        return _unplaceable(supervisor.inventory, spec, exc)
    except instances.InstanceExists as exc:
        return _error(str(exc), "conflict", 409)
    except instances.StartError as exc:
        return _error(str(exc), "start_failed", 500)
    return web.json_response(describe(status), status=200 if existed else 201)


def _absent(name: str) -> web.Response:
    return _error(f"no instance named {name!r}: see GET /v1/instances", "absent", 404)


def _unplaceable(
    held: gpus.Inventory, spec: command.ModelSpec, exc: gpus.Unplaceable
) -> web.Response:
    """409 ``unplaceable`` with the GPUs needed and the free ones that would fit."""
    memory = spec.gpu_memory_bytes
    fitting = [g for g in held.free() if memory is None or g.memory_bytes >= memory]
    return _error(
        f"model {spec.name!r} {exc}: stop an instance (DELETE /v1/instances/NAME) or ask for fewer",
        "unplaceable",
        409,
        needed=spec.gpu_count,
        free=len(fitting),
    )


async def _spec(request: web.Request, name: str) -> command.ModelSpec | web.Response:
    """The model spec of a PUT body; raises BadBody, or answers 409 for weights not cached."""
    try:
        body: Any = await request.json()
    except ValueError as exc:
        raise BadBody(f"the body is not JSON: {_EXAMPLE}") from exc
    if not isinstance(body, dict):
        raise BadBody(f"the body is not a JSON object: {_EXAMPLE}")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadBody(f"unknown field(s) {', '.join(unknown)}: {_EXAMPLE}")
    source = body.get("weights")
    if not isinstance(source, str) or not source:
        raise BadBody(f"weights must be the name of cached weights: {_EXAMPLE}")
    count = body.get("gpus")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
        raise BadBody(f"gpus must be a whole number: {_EXAMPLE}")
    engine = _engine(body.get("engine", {}))
    memory = _memory(body.get("gpu_memory"))
    cached = {w.name: w for w in await request.app[_CACHE].list()}
    if source not in cached:
        return _error(
            f"weights {source!r} are not in the cache: pull them first (POST /v1/weights/pull)",
            "weights_absent",
            409,
        )
    path = str(cached[source].path)
    return command.ModelSpec(
        name, path, engine, gpus=count, gpu_memory_bytes=memory, weights=source
    )


def _engine(value: Any) -> command.EngineArgs:
    if not isinstance(value, dict):
        raise BadBody(f"engine must be an object: {_EXAMPLE}")
    unknown = sorted(set(value) - set(_ENGINE))
    if unknown:
        raise BadBody(
            f"unknown engine field(s) {', '.join(unknown)}: use {', '.join(sorted(_ENGINE))}"
        )
    for key, kinds in _ENGINE.items():
        given = value.get(key)
        wrong = isinstance(given, bool) and bool not in kinds
        if given is not None and (wrong or not isinstance(given, kinds)):
            raise BadBody(f"engine.{key} must be {' or '.join(k.__name__ for k in kinds)}")
    extra = value.get("extra_args", [])
    if not all(isinstance(arg, str) for arg in extra):
        raise BadBody("engine.extra_args must be a list of strings")
    settings = {k: v for k, v in value.items() if k != "extra_args" and v is not None}
    return command.EngineArgs(**settings, extra_args=tuple(extra))


def _memory(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return gpus.parse_memory(value)
        except gpus.InventoryError as exc:
            raise BadBody(f"gpu_memory: {exc}") from exc
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise BadBody('gpu_memory must be a size such as "40GiB" or a number of bytes')


def describe(
    status: instance.InstanceStatus, adapters: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """One instance as the API shows it (its argv with any API key masked), with the spec it
    runs: ``weights`` (the cached name), ``engine`` (every engine field, defaults included)
    and ``gpus_requested`` (the PUT's ``gpus``); all null for an adopted instance until a PUT
    with the same spec names them again. ``adapters`` are the LoRA adapters it serves
    (`nodeagent.loras.served`)."""
    spec = status.spec
    return {
        "name": status.name,
        "path": status.path,
        "state": status.state.value,
        "port": status.port,
        "base_url": status.base_url,
        "gpus": list(status.gpus),
        "pid": status.pid,
        "restarts": status.restarts,
        "last_error": status.last_error,
        "log_tail": status.log_tail,
        "argv": list(status.argv),
        "started_at": status.started_at,
        "adopted": status.adopted,
        "weights": None if spec is None else spec.weights,
        "engine": None if spec is None else _engine_shown(spec.engine),
        "gpus_requested": None if spec is None else spec.gpus,
        "adapters": adapters or [],
    }


def _engine_shown(engine: command.EngineArgs) -> dict[str, Any]:
    shown = dataclasses.asdict(engine)
    shown["extra_args"] = list(engine.extra_args)
    return shown
