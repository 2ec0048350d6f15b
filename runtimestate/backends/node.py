"""The node agent adapter: a GPU host's weights and ``vllm serve`` instances, over httpx.

A node backend's URL is the agent's root (``http://host:8700``); its API v1 is documented in
``nodeagent.api``. Observation is ``GET /v1/weights``, ``/v1/instances`` and ``/v1/inventory``
(required) with ``/v1/info`` (the version; its failure only leaves it None), concurrently: the
cached weights become the observed models (named by repo id, ``loaded`` when an instance runs
from them), the instances and GPU counts the observation's `instances` and `gpus`. Pulls stream
the agent's NDJSON progress like Ollama's (each line within `Timeouts.stall`); instances are
started with ``PUT /v1/instances/{name}`` and stopped with ``DELETE``. LoRA adapters are
loaded into their base model's instance with ``PUT /v1/instances/{name}/adapters/{adapter}``
(the agent pulls their files first) and unloaded with ``DELETE``; observed, each instance's
adapters are served models whose parent is the instance (`nodereplies.models`).

Errors: the agent's refusals carry a ``class`` (`nodereplies.refusal` maps them: 507
``insufficient_disk`` -> InsufficientDisk, 422 ``permanent`` -> ModelNotFound with the hub's
reason, 502 ``transient`` -> BackendUnavailable, 400 ``invalid`` -> InvalidModelName, 409
``unplaceable``/``in_use``/``lora_disabled`` and 422 ``refused`` -> RequestRejected,
``weights_absent`` -> ModelNotFound); 401 is Unauthorized. The agent's token is the backend's
credential: it goes only into the Authorization header and is masked out of every error
(`failures.guard`).

Who calls it: `backends.create`; the backend cycle observes and starts or stops instances,
download workers pull, the pruner deletes. It must not decide what runs where (the planner's).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx

from runtimestate import errors
from runtimestate.backends import base, endpoint, failures, nodereplies, redaction, transport
from runtimestate.desired import engineargs

_SUCCESS = "success"


class NodeBackend(endpoint.BearerEndpoint):
    """Adapter for one node agent. Async context manager; `aclose()`."""

    capabilities: ClassVar[base.Capabilities] = base.Capabilities(
        can_pull=True, can_delete=True, runs_instances=True, can_load_lora=True
    )

    async def observe(self) -> base.Observation:
        """Cached weights as models, the instances and the GPU counts, and the version.

        Read-only. Raises `errors.LlmctlError` when a listing fails; bounded by `total`.
        """
        async with self._guard():
            async with asyncio.TaskGroup() as group:
                cached = group.create_task(self._get("v1/weights"))
                running = group.create_task(self._get("v1/instances"))
                held = group.create_task(self._get("v1/inventory"))
                info = group.create_task(self._info_or_none())
            weights = nodereplies.listed(cached.result(), "weights")
            version = info.result().get("version")
            instances = nodereplies.instances(running.result(), weights)
            return base.Observation(
                models=nodereplies.models(weights, instances),
                healthy=True,
                version=version if isinstance(version, str) else None,
                instances=instances,
                gpus=nodereplies.inventory(held.result()),
                disk=nodereplies.disk(info.result()),
            )

    async def health(self) -> bool:
        """True on ``/v1/health`` 2xx, False on another answer; raises when unreachable."""
        async with self._guard():
            return await self._http.answers("v1/health")

    async def version(self) -> str | None:
        """The agent's version from ``/v1/info``. Raises `errors.LlmctlError`."""
        async with self._guard():
            return await self._http.version("v1/info")

    async def _info_or_none(self) -> Mapping[str, Any]:
        """``/v1/info`` (version, disk), or {} when it fails: neither is required."""
        try:
            return await self._get("v1/info")
        except errors.LlmctlError:
            return {}
        except failures.MAPPED:  # unguarded here: the observation's guard is around it
            return {}

    async def weights_size(self, source: str) -> base.WeightsSize:
        """``GET /v1/weights/size``: the bytes a pull of `source` takes and those cached.
        Raises `errors.LlmctlError` (ModelNotFound for a repo the hub refuses)."""
        async with self._guard(about_model=True):
            found = await self._get(f"v1/weights/size?{urllib.parse.urlencode({'source': source})}")
            total, present = _count(found.get("bytes")), _count(found.get("present"))
            if total is None or present is None:
                raise errors.ProtocolError("a size without bytes or present", backend=self.name)
            return base.WeightsSize(total, present)

    async def pull(self, model: str) -> AsyncIterator[base.PullProgress]:
        """Stream the agent's pull of `model` (a repo id) until ``success``; each line must
        arrive within `stall` seconds. Raises `errors.LlmctlError`: InsufficientDisk (with the
        bytes needed and free), ModelNotFound (the hub's reason), InvalidModelName, temporary
        errors otherwise, whether refused up front or by an error line mid-stream."""
        stall = self._timeouts.stall
        async with contextlib.AsyncExitStack() as stack:
            async with self._guard(about_model=True, total=stall):
                request = self._http.client.build_request(
                    "POST", "v1/weights/pull", json={"source": model}
                )
                response = await self._http.client.send(request, stream=True)
                stack.push_async_callback(response.aclose)
                if not response.is_success:
                    body = await response.aread()
                    raise self._refusal(response.status_code, body, about_model=True)
            lines = response.aiter_lines()
            while True:
                async with self._guard(about_model=True, total=stall):
                    line = await self._next_line(lines)
                    if "error" in line:
                        raise nodereplies.stream_error(line, self.name)
                progress = self._progress(line)
                yield progress
                if progress.status == _SUCCESS:
                    return

    async def _next_line(self, lines: AsyncIterator[str]) -> Mapping[str, Any]:
        while True:
            try:
                text = await anext(lines)
            except StopAsyncIteration:
                raise errors.ProtocolError(
                    "pull stream ended before success", backend=self.name
                ) from None
            if text.strip():
                decoded = transport.decode_json(text.encode())
                return transport.expect_mapping(decoded, "a pull progress line")

    def _progress(self, line: Mapping[str, Any]) -> base.PullProgress:
        status = line.get("status")
        if not isinstance(status, str):
            raise errors.ProtocolError("a pull progress line has no status", backend=self.name)
        weights = line.get("weights")
        commit = weights.get("commit") if isinstance(weights, Mapping) else None
        return base.PullProgress(
            status=redaction.mask(status, self._secret),
            digest=commit if isinstance(commit, str) else None,
            total=_count(line.get("total")),
            completed=_count(line.get("completed")),
        )

    async def delete(self, model: str) -> None:
        """Delete cached weights. A missing one raises `errors.ModelNotFound` (callers treat
        it as done); weights an instance runs from raise `errors.RequestRejected` naming it."""
        async with self._guard(about_model=True):
            await self._call("DELETE", f"v1/weights/{_quoted(model)}", about_model=True)

    async def start_instance(
        self, name: str, weights: str, vllm: engineargs.VllmArgs | None
    ) -> None:
        """Start (or keep) the instance `name` from cached `weights` with the declared engine
        arguments; one that runs another spec is stopped and started again. Raises
        RequestRejected ("needs N GPU, M free") when it cannot be placed, ModelNotFound when
        the weights are not cached, other `errors` as mapped."""
        body = {"weights": weights, **engineargs.agent_body(vllm)}
        path = f"v1/instances/{_quoted(name)}"
        async with self._guard(about_model=True):
            response = await self._http.client.put(path, json=body)
            if response.status_code == 409 and _class(response) == "conflict":
                await self._call("DELETE", path, about_model=True, absent_ok=True)
                response = await self._http.client.put(path, json=body)
            if not response.is_success:
                raise self._refusal(response.status_code, response.content, about_model=True)

    async def stop_instance(self, name: str) -> None:
        """Stop the instance `name` (its whole process group); an absent one is success."""
        async with self._guard(about_model=True):
            path = f"v1/instances/{_quoted(name)}"
            await self._call("DELETE", path, about_model=True, absent_ok=True)

    async def load_lora(
        self, name: str, path: str, base_model: str | None = None, revision: str | None = None
    ) -> None:
        """Load adapter `name` into `base_model`'s instance: the agent pulls `path` (a repo id
        or a directory on the node) into its cache first, so this waits up to `stall`.
        Idempotent. Raises RequestRejected when the instance runs without LoRA or refuses the
        files, ModelNotFound when the hub has no such repo or there is no instance, other
        `errors` as mapped."""
        if base_model is None:
            raise errors.InvalidModelName(
                f"adapter {name!r}: a node agent loads adapters into the instance of their "
                "base model, and none was given",
                backend=self.name,
            )
        route = f"v1/instances/{_quoted(base_model)}/adapters/{_quoted(name, safe='')}"
        stall = self._timeouts.stall
        async with self._guard(about_model=True, total=stall):
            response = await self._http.client.put(
                route, json={"source": path, "revision": revision}, timeout=stall
            )
            if not response.is_success:
                raise self._refusal(response.status_code, response.content, about_model=True)

    async def unload_lora(self, name: str) -> None:
        """Unload adapter `name` from every instance serving it; ModelNotFound when none does."""
        async with self._guard(about_model=True):
            listed = nodereplies.instances(await self._get("v1/instances"), ())
            serving = [i.name for i in listed if name in i.adapters]
            if not serving:
                message = f"no instance serves adapter {name!r}"
                raise errors.ModelNotFound(message, backend=self.name)
            for instance in serving:
                route = f"v1/instances/{_quoted(instance)}/adapters/{_quoted(name, safe='')}"
                await self._call("DELETE", route, about_model=True, absent_ok=True)

    async def _get(self, path: str) -> Mapping[str, Any]:
        response = await self._http.client.get(path)
        if not response.is_success:
            raise self._refusal(response.status_code, response.content, about_model=False)
        return transport.expect_mapping(transport.decode_json(response.content), path)

    async def _call(
        self, method: str, path: str, *, about_model: bool, absent_ok: bool = False
    ) -> None:
        response = await self._http.client.request(method, path)
        if response.status_code == 404 and absent_ok:
            return
        if not response.is_success:
            raise self._refusal(response.status_code, response.content, about_model=about_model)

    def _refusal(self, status: int, body: bytes, *, about_model: bool) -> errors.LlmctlError:
        return nodereplies.refusal(status, body, self.name, about_model=about_model)


def _quoted(name: str, safe: str = "/") -> str:
    """A weights or instance name in a path: its slashes kept (``org/name``, ``/abs/dir``),
    anything else that would change the URL escaped."""
    return urllib.parse.quote(name, safe=safe)


def _class(response: httpx.Response) -> str | None:
    try:
        found = transport.expect_mapping(transport.decode_json(response.content), "a refusal")
    except transport.MalformedReply:
        return None
    kind = found.get("class")
    return kind if isinstance(kind, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
