"""Shared pieces of the backend-cycle tests: a fast State on a migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import nats
from nats.aio.msg import Msg

from dwqueue import flushing, jobs, publisher, queue
from emulators import ollama
from runtimestate import clock, downloads, state
from runtimestate.backends import base
from runtimestate.desired import manifest
from runtimestate.reconcile import cycle, probing
from tests.integration.downloads_fixtures import FAST, World

QUICK = state.Settings(
    timeouts=base.Timeouts(connect=1.0, read=1.0, stall=2.0, total=1.5),
    downloads=FAST.downloads,
    cycle=cycle.Settings(
        deadline_s=3.0,
        probing=probing.Policy(
            grace=dt.timedelta(seconds=1.5),
            base_delay=dt.timedelta(seconds=0.05),
            max_delay=dt.timedelta(seconds=0.2),
        ),
    ),
)

# Production's grace and backoff (minutes): for tests that move a `clock.FakeClock` past them.
PATIENT = dataclasses.replace(
    QUICK, cycle=dataclasses.replace(QUICK.cycle, probing=probing.Policy())
)


class Fleet(World):
    """A World that can apply files and converge."""

    def __init__(
        self,
        url: str,
        settings: state.Settings = QUICK,
        sink: Any = None,
        clock: clock.Clock = clock.SYSTEM,
    ) -> None:
        super().__init__(url, settings=settings, sink=sink, clock=clock)

    async def apply(self, text: str, *, prune: bool = False) -> None:
        parsed = manifest.parse(text)
        await self.tx(lambda s: manifest.apply(s, parsed, prune=prune))

    async def converge(self, cycles: int = 40) -> cycle.Report:
        """Backend cycles plus download cycles until a plan is empty and nothing runs."""
        report = await self.state.run_backend_cycle()
        for _ in range(cycles):
            await self.state.run_download_cycle()
            await self.state.downloads.drain(5.0)
            report = await self.state.run_backend_cycle()
            active = await self.tx(
                lambda s: queue.list_jobs(s, states=[jobs.JobState.QUEUED, jobs.JobState.RUNNING])
            )
            if not report.plan.mutating and not active:
                return report
        return report


def installed(emu: ollama.Emulator, node: int) -> set[str]:
    """The models on an emulated node's disk."""
    return {m.spec.name for m in emu.nodes[node].installed.values()}


def fleet_file(
    backends: dict[str, tuple[str, str, str]],
    models: list[str],
    pool: str = "main",
    *,
    adapters: Mapping[str, str] | None = None,
    warm: Collection[str] = (),
    keep_alive: str | None = None,
    budgets: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """A file with the given backends (name -> (type, url, prune)) all serving ``models``.

    Issue 16's declarations: ``adapters`` (name -> base model, source ``/adapters/<name>``)
    placed through the pool, the models in ``warm`` declared warm (with ``keep_alive``), and
    ``budgets`` (backend -> ``{"vramBytes": n}`` and/or ``{"diskBytes": n}``)."""
    docs = []
    for name, (kind, url, prune) in backends.items():
        extra = "".join(f", {k}: {v}" for k, v in (budgets or {}).get(name, {}).items())
        docs.append(
            f"apiVersion: llmctl/v1\nkind: Backend\nmetadata: {{name: {name}}}\n"
            f'spec: {{type: {kind}, url: "{url}", prune: {prune}{extra}}}\n'
        )
    for model in models:
        body = ""
        if model in warm:
            body = "spec: {warm: true" + (f', keepAlive: "{keep_alive}"' if keep_alive else "")
            body += "}\n"
        docs.append(f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{model}"}}\n{body}')
    for name, parent in (adapters or {}).items():
        docs.append(
            f"apiVersion: llmctl/v1\nkind: Adapter\nmetadata: {{name: {name}}}\n"
            f'spec: {{baseModel: "{parent}", source: /adapters/{name}}}\n'
        )
    members = ", ".join(backends)
    quoted = ", ".join(f'"{m}"' for m in models)
    placed = ", ".join(adapters or {})
    docs.append(
        f"apiVersion: llmctl/v1\nkind: Pool\nmetadata: {{name: {pool}}}\n"
        f"spec: {{backends: [{members}], models: [{quoted}], adapters: [{placed}]}}\n"
    )
    return "---\n".join(docs)


__all__ = ["PATIENT", "QUICK", "Fleet", "downloads", "fleet_file", "installed"]


ARRIVES_S = 15.0  # generous: a passing test never waits it out


@dataclasses.dataclass
class Heard:
    """Messages under ``<prefix>.v1.``, in arrival order: (subject suffix, decoded JSON)."""

    prefix: str
    messages: list[tuple[str, dict[str, object]]] = dataclasses.field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        self.messages.append((msg.subject.removeprefix(f"{self.prefix}.v1."), json.loads(msg.data)))

    def states(self) -> list[tuple[str, dict[str, object]]]:
        return [(s.removeprefix("state."), d) for s, d in self.messages if s.startswith("state.")]

    async def through_cycle(self, number: int) -> None:
        """Wait for cycle ``number``'s summary: the cycle publishes it after its states, on
        one connection, so every state message of that cycle has arrived by then."""
        deadline = time.monotonic() + ARRIVES_S
        while not any(s == "cycles" and d["cycle"] == number for s, d in self.messages):
            assert time.monotonic() < deadline, f"no summary of cycle {number}: {self.messages}"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def published_fleet(
    migrated_url: str, nats_url: str, nats_prefix: str
) -> AsyncIterator[tuple[Fleet, Heard]]:
    """A fleet whose cycles publish on real NATS, and what a subscriber to them heard."""
    heard = Heard(nats_prefix)
    listener = await nats.connect(nats_url)
    await listener.subscribe(f"{nats_prefix}.v1.>", cb=heard.on_message)
    await flushing.flush(listener, 10)  # the server has the SUB
    sink = publisher.Publisher(nats_url, prefix=nats_prefix, reconnect_wait_s=0.2)
    await sink.start()
    deadline = time.monotonic() + ARRIVES_S
    while sink.jetstream is None:
        assert time.monotonic() < deadline, "the publisher never connected"
        await asyncio.sleep(0.02)
    settings = dataclasses.replace(
        QUICK, cycle=dataclasses.replace(QUICK.cycle, prefix=nats_prefix)
    )
    fleet = Fleet(migrated_url, settings, sink=sink)
    try:
        yield fleet, heard
    finally:
        await fleet.close()
        await sink.close()
        await listener.drain()
