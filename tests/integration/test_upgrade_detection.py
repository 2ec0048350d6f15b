"""Upgrade detection (issue 19): a tag that moved in the emulated registry is reported, once an
interval, on every backend holding the old copy, by every process sharing the database."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import structlog.testing

from emulators import faults, ollama
from runtimestate import clock, snapshot
from runtimestate.reconcile import cycle, upgradewatch
from tests.integration.cycle_fixtures import QUICK, Fleet, fleet_file

pytestmark = pytest.mark.timeout(60)
INTERVAL_S = 60.0
MANIFEST = "GET /v2/library/qwen2/manifests/0.5b"
BACKENDS = ("gpu-1", "gpu-2", "gpu-3")


@pytest.fixture
async def nodes() -> AsyncIterator[ollama.Emulator]:
    async with ollama.running(nodes=3, installed=["qwen2:0.5b"]) as emu:
        yield emu


def _fleet(url: str, emu: ollama.Emulator, fake: clock.FakeClock) -> Fleet:
    watch = upgradewatch.Settings(interval_s=INTERVAL_S, registry_url=emu.node_url(0), hub_url=None)
    settings = dataclasses.replace(QUICK, cycle=dataclasses.replace(QUICK.cycle, upgrades=watch))
    return Fleet(url, settings, clock=fake)


def _file(emu: ollama.Emulator) -> str:
    backends = {b: ("ollama", emu.node_url(i), "managed") for i, b in enumerate(BACKENDS)}
    return fleet_file(backends, ["qwen2:0.5b"])


def _update(report: cycle.Report, backend: str) -> snapshot.Condition | None:
    found = report.snapshot.backends[backend].conditions
    return next((c for c in found if c.type == "UpdateAvailable"), None)


async def _cycles(fleet: Fleet, count: int) -> cycle.Report:
    for _ in range(count):
        report = await fleet.state.run_backend_cycle()
    return report


async def test_a_published_digest_shows_on_every_backend_within_one_interval_asked_once(
    migrated_url: str, nodes: ollama.Emulator
) -> None:
    fake = clock.FakeClock()
    fleet, other = _fleet(migrated_url, nodes, fake), _fleet(migrated_url, nodes, fake)
    asked = nodes.nodes[0].requests
    try:
        await fleet.apply(_file(nodes))
        report = await _cycles(fleet, 3)
        assert asked[MANIFEST] == 1
        assert all(_update(report, b) is None for b in BACKENDS)
        old = report.snapshot.backends["gpu-1"].pulled_models[0].digest
        new = ollama.publish(nodes, "qwen2:0.5b").digest
        report = await _cycles(fleet, 3)
        assert asked[MANIFEST] == 1  # not due yet: nothing new is known
        assert all(_update(report, b) is None for b in BACKENDS)
        fake.advance(INTERVAL_S)
        report = await _cycles(fleet, 4)
        assert asked[MANIFEST] == 2
        for backend in BACKENDS:
            found = _update(report, backend)
            assert found is not None
            assert found.reason == "update_available"
            assert f"qwen2:0.5b: {old[:12]} -> {new[:12]} since " in found.message
        shared = await other.state.run_backend_cycle()  # another replica, or reconcile --once
        assert asked[MANIFEST] == 2
        assert _update(shared, "gpu-2") == _update(report, "gpu-2")
    finally:
        await fleet.close()
        await other.close()


async def test_an_unreachable_registry_keeps_what_was_known_and_logs_once(
    migrated_url: str, nodes: ollama.Emulator
) -> None:
    fake = clock.FakeClock()
    fleet = _fleet(migrated_url, nodes, fake)
    try:
        await fleet.apply(_file(nodes))
        ollama.publish(nodes, "qwen2:0.5b")
        known = _update(await fleet.state.run_backend_cycle(), "gpu-1")
        assert known is not None
        nodes.set_fault(faults.Fault(faults.FaultKind.HTTP_503), node=0, endpoint=MANIFEST[4:])
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                fake.advance(INTERVAL_S)
                report = await fleet.state.run_backend_cycle()
                assert _update(report, "gpu-1") == known
        assert nodes.nodes[0].requests[MANIFEST] == 4
        failed = [line for line in logs if line["event"] == "upgrade check failed"]
        assert [(f["model"], f["error"]) for f in failed] == [("qwen2:0.5b", "HTTP 503")]
    finally:
        await fleet.close()
