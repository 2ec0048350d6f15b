"""A gateway in the test's event loop over emulated vLLM nodes, for the official openai client.

`running(...)` (`vllm.Options`; two nodes by default) starts the vLLM emulator (``nodes`` nodes serving ``qwen`` and, on a
``pooling`` host, ``embedder``), a resolver over a snapshot that declares one backend per node,
and the gateway application listening on a free loopback port; it yields a `Harness` with the
gateway's URL, the emulator, the resolver and an ``openai.AsyncOpenAI`` client pointed at the
gateway (no client retries, so every failure the gateway lets through is seen).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Unpack

import openai
from aiohttp import web

from emulators import runner, vllm, vllm_node
from gateway import access, application, exchange
from runtimestate import desired, resolver, snapshot
from runtimestate.desired import spec
from tests.unit.test_resolver import backend, fleet, model

GENERATIVE = ("chat", "prompt", "stream")
META = spec.Meta(1, 1, dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1))


@dataclasses.dataclass
class Harness:
    url: str
    emulator: runner.Emulator[vllm_node.VllmNode]
    resolver: resolver.Resolver
    client: openai.AsyncOpenAI


def states(
    emu: runner.Emulator[vllm_node.VllmNode], name: str, caps: tuple[str, ...]
) -> list[snapshot.LLMState]:
    return [
        backend(f"vllm-{i}", model(name, 8192, caps=caps), type_="vllm", base_url=emu.node_url(i))
        for i in range(len(emu.nodes))
    ]


def declared(states: list[snapshot.LLMState], kind: str = "vllm") -> desired.DesiredState:
    backends = tuple(
        spec.Backend(spec.BackendSpec(s.name, spec.BackendType(kind), s.base_url), META)
        for s in states
    )
    return desired.DesiredState(backends=backends, models=(), pools=())


@contextlib.asynccontextmanager
async def serving(
    r: resolver.Resolver,
    settings: application.Settings = application.Settings(),
    keys: access.Keys | None = None,
    observers: Sequence[exchange.Observer] = (),
    metrics: Callable[[], bytes] | None = None,
) -> AsyncIterator[str]:
    """The gateway over ``r`` on a free loopback port; yields its base URL (``.../v1``)."""
    app = application.build(r, settings=settings, keys=keys, observers=observers, metrics=metrics)
    async with listening(app) as url:
        yield url


@contextlib.asynccontextmanager
async def listening(app: web.Application, path: str = "/v1") -> AsyncIterator[str]:
    """Any aiohttp ``app`` (a gateway, or a stand-in provider or collector) on a free loopback
    port; yields its URL, ``path`` appended."""
    site, port = await application.start(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await site.cleanup()


@contextlib.asynccontextmanager
async def running(
    settings: application.Settings = application.Settings(),
    observers: Sequence[exchange.Observer] = (),
    **options: Unpack[vllm.Options],
) -> AsyncIterator[Harness]:
    served = "embedder" if options.get("runner") == "pooling" else "qwen"
    caps = ("embed",) if served == "embedder" else GENERATIVE
    options.setdefault("nodes", 2)
    options["served_model_names"] = [served]
    async with vllm.running(**options) as emu:
        fleet_states = states(emu, served, caps)
        r = resolver.Resolver.from_snapshot(fleet(*fleet_states), desired=declared(fleet_states))
        async with serving(r, settings, observers=observers) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            try:
                yield Harness(url, emu, r, client)
            finally:
                await client.close()
