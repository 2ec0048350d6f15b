"""Rolling upgrades (issue 19) on emulated Ollama nodes: an ``auto`` model is re-pulled one
backend at a time while every request still resolves to a copy that serves; a ``manual`` one
is only reported."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from dwqueue import jobs, queue
from emulators import ollama
from runtimestate import resolver
from runtimestate.reconcile import steps, upgradewatch
from tests.integration.cycle_fixtures import QUICK, Fleet

pytestmark = pytest.mark.timeout(90)
QWEN, SMOL = "qwen2:0.5b", "smollm2:135m"
BACKENDS = ("gpu-1", "gpu-2", "gpu-3")


@pytest.fixture
async def nodes() -> AsyncIterator[ollama.Emulator]:
    # 352 MB at 1 GB/s: each re-pull lasts about a third of a second, a few resolutions long.
    async with ollama.running(
        nodes=3, installed=[QWEN, SMOL], pull_rate=1_000_000_000, tick_interval=0.02
    ) as emu:
        yield emu


def _file(emu: ollama.Emulator) -> str:
    docs = [
        f"apiVersion: llmctl/v1\nkind: Backend\nmetadata: {{name: {b}}}\n"
        f'spec: {{type: ollama, url: "{emu.node_url(i)}"}}\n'
        for i, b in enumerate(BACKENDS)
    ]
    docs.append(
        f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{QWEN}"}}\n'
        "spec: {updatePolicy: auto, maxUnavailable: 1}\n"
    )
    docs.append(f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{SMOL}"}}\n')
    docs.append(
        "apiVersion: llmctl/v1\nkind: Pool\nmetadata: {name: main}\n"
        f'spec: {{backends: [{", ".join(BACKENDS)}], models: ["{QWEN}", "{SMOL}"]}}\n'
    )
    return "---\n".join(docs)


@dataclasses.dataclass
class Traffic:
    """Resolves QWEN every 100 ms and chats with the choice; counts what went wrong and the
    most nodes ever downloading at once."""

    resolutions: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    most_out: int = 0

    async def run(self, fleet: Fleet, emu: ollama.Emulator) -> None:
        found = resolver.Resolver.from_state(fleet.state)
        request = resolver.Request(models=(QWEN,))
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                out = sum(bool(node.downloads) for node in emu.nodes)
                self.most_out = max(self.most_out, out)
                try:
                    chosen = found.resolve(request).provider
                    reply = await client.post(
                        f"{chosen.base_url}/api/chat",
                        json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}],
                              "stream": False},
                    )  # fmt: skip
                    if reply.status_code != 200:
                        self.failures.append(f"{chosen.backend}: {reply.status_code}")
                except resolver.ResolveError as exc:
                    self.failures.append(str(exc))
                self.resolutions += 1
                await asyncio.sleep(0.1)  # the pace of the traffic, not a wait for a result


def _digests(emu: ollama.Emulator, model: str) -> set[str]:
    installed = (m for node in emu.nodes for m in node.installed.values())
    return {m.spec.digest for m in installed if m.spec.name == model}


async def _upgrading(fleet: Fleet) -> list[jobs.Job]:
    active = await fleet.tx(lambda s: queue.list_jobs(s, states=list(jobs.ACTIVE_STATES)))
    return [j for j in active if j.model == QWEN]


async def test_an_auto_upgrade_rolls_one_backend_at_a_time_while_resolving_never_fails(
    migrated_url: str, nodes: ollama.Emulator
) -> None:
    watch = upgradewatch.Settings(interval_s=3600, registry_url=nodes.node_url(0), hub_url=None)
    settings = dataclasses.replace(QUICK, cycle=dataclasses.replace(QUICK.cycle, upgrades=watch))
    fleet = Fleet(migrated_url, settings)
    traffic = Traffic()
    try:
        await fleet.apply(_file(nodes))
        new = ollama.publish(nodes, QWEN).digest
        smol = ollama.publish(nodes, SMOL).digest
        report = await fleet.state.run_backend_cycle()  # learns of both, starts one re-pull
        running = asyncio.ensure_future(traffic.run(fleet, nodes))
        planned: list[steps.Pull] = []
        for _ in range(60):
            upgrades = [a for a in report.plan.of(steps.Pull) if a.reason.code.value == "upgrade"]
            planned += upgrades
            assert len(upgrades) <= 1, upgrades
            await fleet.state.run_download_cycle()
            assert len(await _upgrading(fleet)) <= 1
            await fleet.state.downloads.drain(10.0)
            if _digests(nodes, QWEN) == {new}:
                break
            report = await fleet.state.run_backend_cycle()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert _digests(nodes, QWEN) == {new}
        assert sorted(p.backend for p in planned) == list(BACKENDS)
        assert traffic.failures == []
        assert traffic.resolutions >= 3
        assert traffic.most_out <= 1
        assert [node.pulls[SMOL] for node in nodes.nodes] == [0, 0, 0]  # manual: reported only
        assert smol not in _digests(nodes, SMOL)
        final = await fleet.state.run_backend_cycle()
        for backend in BACKENDS:
            condition = final.snapshot.backends[backend].condition("UpdateAvailable")
            assert condition is not None
            assert condition.message.startswith(f"{SMOL}: ")
    finally:
        await fleet.close()
