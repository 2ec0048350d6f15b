"""The vLLM adapter: served models, health, version, load gauges and runtime LoRA, over httpx.

A vLLM server serves a fixed model set, so there is no pull or delete (a missing capability,
see `capabilities`); runtime LoRA load/unload exists when the server enables it. Observation is
`/v1/models` (required) with `/health`, `/version` and `/metrics` fetched concurrently; those
three only degrade the observation (`healthy=False`, `version=None`, `metrics=None`) when they
fail, because a node that serves models but has a broken metrics page is still serving.

Errors: both envelopes (nested ``{"error":{"message"}}`` from 0.10.1 on, flat
``{"object":"error","message"}`` before) are read by `transport.error_message`; statuses are
classified by `errors.from_status`. The API key goes only into the Authorization header.

Who calls it: `backends.create`; the backend cycle observes, the LoRA manager loads/unloads.
It must not decide what to load; that is the planner's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import ClassVar, TypeVar

from prometheus_client import parser as prometheus_parser

from runtimestate import errors
from runtimestate.backends import base, endpoint, openai, transport

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # new, then old
_ALREADY_LOADED = "has already been loaded"
_ROUTE_MISSING = "Not Found"  # FastAPI's 404 body when the LoRA routes are not registered

T = TypeVar("T")


class VllmBackend(endpoint.BearerEndpoint):
    """Adapter for one vLLM server. Async context manager; `aclose()`."""

    capabilities: ClassVar[base.Capabilities] = base.Capabilities(
        can_load_lora=True, has_metrics=True
    )

    async def observe(self) -> base.Observation:
        """Served models (base and LoRA cards, all loaded) plus health, version, metrics.

        Read-only. Raises `errors.LlmctlError` when `/v1/models` fails; bounded by `total`.
        """
        async with self._guard():
            async with asyncio.TaskGroup() as group:
                listing = group.create_task(self._http.get_json("v1/models"))
                healthy = group.create_task(_or_default(self.health(), False))
                version = group.create_task(_or_default(self.version(), None))
                metrics = group.create_task(_or_default(self.metrics(), None))
            models = openai.models_from_listing(listing.result(), loaded=True)
        return base.Observation(
            models=models,
            healthy=healthy.result(),
            version=version.result(),
            metrics=metrics.result(),
        )

    async def health(self) -> bool:
        """True on `/health` 2xx, False on another answer (503: engine dead); raises when the
        server cannot be reached or does not answer in time."""
        async with self._guard():
            return await self._http.answers("health")

    async def version(self) -> str | None:
        """The server version from `/version`. Raises `errors.LlmctlError`."""
        async with self._guard():
            return await self._http.version("version")

    async def metrics(self) -> base.EngineMetrics:
        """Parse `/metrics`; raises `errors.ProtocolError` when the gauges are missing."""
        async with self._guard():
            response = await self._http.get("metrics")
            return parse_metrics(response.text)

    async def load_lora(
        self, name: str, path: str, base_model: str | None = None, revision: str | None = None
    ) -> None:
        """Load a LoRA adapter. Idempotent: an adapter already loaded under `name` counts as
        success. Raises ModelNotFound when `path` holds no adapter, RequestRejected (404 on
        the route) when runtime LoRA updating is disabled, other `errors` as mapped.
        `base_model` is not sent: the server loads it onto the model it serves."""
        body = {"lora_name": name, "lora_path": path}
        async with self._guard(about_model=True):
            try:
                await self._lora_call("v1/load_lora_adapter", body)
            except errors.RequestRejected as exc:
                if _ALREADY_LOADED not in exc.detail:
                    raise

    async def unload_lora(self, name: str) -> None:
        """Unload a LoRA adapter; an unknown `name` raises `errors.ModelNotFound`."""
        async with self._guard(about_model=True):
            await self._lora_call("v1/unload_lora_adapter", {"lora_name": name})

    async def _lora_call(self, path: str, body: dict[str, str]) -> None:
        try:
            await self._http.post_json(path, body, about_model=True)
        except errors.ModelNotFound as exc:
            if exc.detail != _ROUTE_MISSING:
                raise
            raise errors.RequestRejected(
                "runtime LoRA updating is off (VLLM_ALLOW_RUNTIME_LORA_UPDATING)",
                backend=self.name,
                status_code=exc.status_code,
            ) from exc


async def _or_default(call: Awaitable[T], default: T) -> T:
    """Degrade an auxiliary probe: its mapped failure becomes `default`."""
    try:
        return await call
    except errors.LlmctlError:
        return default


def parse_metrics(text: str) -> base.EngineMetrics:
    """Running and waiting requests summed over engines; KV-cache usage (0..1) of the fullest
    engine under the current name, else the pre-0.10 `gpu_cache_usage_perc`. Pure.

    Raises `transport.MalformedReply` (when the Prometheus parser refuses the text, when it is
    cut short, or when the request gauges are absent).
    """
    if not text.endswith("\n"):  # the format ends every line, the last one included
        raise transport.MalformedReply("truncated /metrics text (no final line feed)")
    values: dict[str, list[float]] = {}
    try:
        for family in prometheus_parser.text_string_to_metric_families(text):
            for sample in family.samples:
                values.setdefault(sample.name, []).append(float(sample.value))
    except ValueError as exc:  # the parser's only complaint about its input
        raise transport.MalformedReply(f"unparseable /metrics text: {exc}") from exc
    if RUNNING not in values or WAITING not in values:
        raise transport.MalformedReply("no vLLM request gauges in /metrics")
    return base.EngineMetrics(
        running=sum(values[RUNNING]),
        waiting=sum(values[WAITING]),
        kv_cache_usage=_first_max(values.get(name) for name in KV_USAGE_NAMES),
    )


def _first_max(candidates: Iterable[list[float] | None]) -> float | None:
    for found in candidates:
        if found:
            return max(found)
    return None
