"""The node agent's LoRA adapter routes: adapters loaded into a running ``vllm serve`` instance.

`register(app, supervisor, shared)` adds ``PUT|DELETE /v1/instances/{name}/adapters/{adapter}``
(`nodeagent.api.build` calls it before the instance routes, whose names take slashes). A PUT
(body ``{"source": "org/repo" | "/abs/dir", "revision": "main"}``) pulls the adapter's files
into the weights cache through the agent's shared pulls (`nodeagent.pulls`: the same cache and
refusals as ``POST /v1/weights/pull``; it answers once done, without progress lines), then
posts their local path to the instance's ``/v1/load_lora_adapter`` (PROTOCOLS.md 3.5; the
supervisor sets ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` for instances run with ``--enable-lora``).
A DELETE posts ``/v1/unload_lora_adapter``. `served` lists an instance's adapters from its
``/v1/models`` cards with a ``parent``: an instance that restarts forgets them, and says so.

Refusals: 404 ``absent`` (no such instance, or no such adapter to unload), 409 ``lora_disabled``
(the instance runs without ``--enable-lora`` or without runtime updating), 409 ``not_ready``
(it is starting or crash-looping), 422 ``refused`` (the instance refused the files, with its
words), 502 ``transient`` (the instance did not answer), and a pull's own (400, 422, 502, 507).
Must not decide which adapters go where (the controller does). Imports nothing of ours but
`nodeagent`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiohttp import web

from nodeagent import command, instance, instances, pulls, weights

_SUPERVISOR = web.AppKey("lora_supervisor", instances.Supervisor)
_PULLS = web.AppKey("lora_pulls", pulls.Pulls)
_HTTP = web.AppKey("lora_http", httpx.AsyncClient)
ROUTE = "/v1/instances/{name:.+}/adapters/{adapter:[^/]+}"
_EXAMPLE = 'send {"source": "org/repo" or "/abs/dir", "revision": "main"}'
_LOAD_SECONDS = 120.0  # vLLM reads the adapter's files into GPU memory before it answers
_LIST_SECONDS = 2.0  # an instance's /v1/models, per listing
_PULL_STATUS = {
    weights.ErrorKind.INVALID: 400,
    weights.ErrorKind.PERMANENT: 422,
    weights.ErrorKind.INSUFFICIENT_DISK: 507,
    weights.ErrorKind.TRANSIENT: 502,
}


class Refusal(Exception):
    """A request the agent answers with an error; `answer` is that answer."""

    def __init__(self, message: str, kind: str, status: int) -> None:
        super().__init__(message)
        self.answer = web.json_response({"error": message, "class": kind}, status=status)


def register(app: web.Application, supervisor: instances.Supervisor, shared: pulls.Pulls) -> None:
    """Adds the adapter routes over `supervisor`, pulling through `shared`."""
    app[_SUPERVISOR] = supervisor
    app[_PULLS] = shared
    app[_HTTP] = httpx.AsyncClient()
    app.on_cleanup.append(_close)
    app.router.add_put(ROUTE, load)
    app.router.add_delete(ROUTE, unload)


async def _close(app: web.Application) -> None:
    await app[_HTTP].aclose()


async def load(request: web.Request) -> web.Response:
    """Pull the adapter's files, then load them into the instance under the adapter's name."""
    name, adapter = request.match_info["name"], request.match_info["adapter"]
    try:
        source, revision = await _requested(request)
        url, key = _target(request.app, name)
        found = await _pull(request.app[_PULLS], source, revision)
        body = {"lora_name": adapter, "lora_path": str(found.path)}
        reply = await _post(request.app, url, key, "load_lora_adapter", body)
        if reply.status_code != 200 and "already been loaded" not in _detail(reply):
            raise _refused(name, adapter, reply)
    except Refusal as refusal:
        return refusal.answer
    shown = {"loaded": adapter, "instance": name, "source": found.name, "path": str(found.path)}
    return web.json_response(shown)


async def unload(request: web.Request) -> web.Response:
    """Unload the adapter from the instance; 404 when it is not loaded there."""
    name, adapter = request.match_info["name"], request.match_info["adapter"]
    try:
        url, key = _target(request.app, name)
        reply = await _post(request.app, url, key, "unload_lora_adapter", {"lora_name": adapter})
        if reply.status_code == 404 and _detail(reply) != "Not Found":
            raise Refusal(
                f"instance {name!r} has no adapter {adapter!r} loaded: see GET /v1/instances",
                "absent",
                404,
            )
        if reply.status_code != 200:
            raise _refused(name, adapter, reply)
    except Refusal as refusal:
        return refusal.answer
    return web.json_response({"unloaded": adapter, "instance": name})


async def served(app: web.Application, status: instance.InstanceStatus) -> list[dict[str, str]]:
    """The adapters a ready instance serves (``name``, ``parent``, ``path``); [] for any other
    instance and for one whose ``/v1/models`` does not answer a list (the next look retries)."""
    supervisor, http = app.get(_SUPERVISOR), app.get(_HTTP)
    where = None if supervisor is None else supervisor.endpoint(status.name)
    if http is None or where is None or status.state is not instance.State.READY:
        return []
    url, key = where
    try:
        reply = await http.get(f"{url}/v1/models", headers=_auth(key), timeout=_LIST_SECONDS)
        cards = reply.json().get("data") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    if not isinstance(cards, list):
        return []
    return [
        {"name": str(c.get("id")), "parent": str(c["parent"]), "path": str(c.get("root") or "")}
        for c in cards
        if isinstance(c, dict) and isinstance(c.get("parent"), str)
    ]


async def served_by(
    app: web.Application, found: list[instance.InstanceStatus]
) -> list[list[dict[str, str]]]:
    """`served` of each instance, asked concurrently."""
    return list(await asyncio.gather(*(served(app, status) for status in found)))


async def _requested(request: web.Request) -> tuple[str, str | None]:
    try:
        return await pulls.requested(request, _EXAMPLE)
    except pulls.BadRequest as exc:
        raise Refusal(str(exc), "invalid", 400) from None


def _target(app: web.Application, name: str) -> tuple[str, str | None]:
    """The instance's URL and API key, once it is known to take adapters now."""
    supervisor = app[_SUPERVISOR]
    status, where = supervisor.get(name), supervisor.endpoint(name)
    if status is None or where is None:
        raise Refusal(f"no instance named {name!r}: see GET /v1/instances", "absent", 404)
    if command.LORA_FLAG not in status.argv:
        raise Refusal(
            f"instance {name!r} runs without {command.LORA_FLAG}: start it with "
            '"engine": {"enable_lora": true} (llmctl: the model\'s vllm.enableLora)',
            "lora_disabled",
            409,
        )
    if status.state is not instance.State.READY:
        message = f"instance {name!r} is {status.state.value}: load adapters once it is ready"
        raise Refusal(message, "not_ready", 409)
    return where


async def _pull(shared: pulls.Pulls, source: str, revision: str | None) -> weights.Weights:
    waiter = shared.join(source, revision)
    try:
        return await asyncio.shield(waiter.task)
    except weights.WeightsError as exc:
        raise Refusal(str(exc), exc.kind.value, _PULL_STATUS[exc.kind]) from exc
    finally:
        shared.leave(waiter)  # a client that leaves mid-pull stops it, as for weights


async def _post(
    app: web.Application, url: str, key: str | None, route: str, body: dict[str, str]
) -> httpx.Response:
    try:
        return await app[_HTTP].post(
            f"{url}/v1/{route}", json=body, headers=_auth(key), timeout=_LOAD_SECONDS
        )
    except httpx.HTTPError as exc:
        message = f"the instance did not answer /v1/{route}: {type(exc).__name__}; try again"
        raise Refusal(message, "transient", 502) from exc


def _refused(name: str, adapter: str, reply: httpx.Response) -> Refusal:
    detail = _detail(reply)
    if reply.status_code == 404 and detail == "Not Found":  # FastAPI's: the routes are off
        return Refusal(
            f"instance {name!r} has runtime LoRA updating off ({command.LORA_ENV}): restart it",
            "lora_disabled",
            409,
        )
    if reply.status_code >= 500:
        message = f"instance {name!r} failed on adapter {adapter!r}: {detail}"
        return Refusal(message, "transient", 502)
    return Refusal(f"instance {name!r} refused adapter {adapter!r}: {detail}", "refused", 422)


def _detail(reply: httpx.Response) -> str:
    """vLLM's error words: ``{"error": {"message"}}``, FastAPI's ``{"detail"}``, or the text."""
    try:
        found: Any = reply.json()
    except ValueError:
        return reply.text.strip()
    if isinstance(found, dict):
        inner = found.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(found.get("detail"), str):
            return str(found["detail"])
        if isinstance(found.get("message"), str):
            return str(found["message"])
    return reply.text.strip()


def _auth(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}
