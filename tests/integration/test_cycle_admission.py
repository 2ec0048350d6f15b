"""Admission on emulated Ollama nodes with a disk: pulls are held with the numbers, not failed.

The backend declares its disk (`diskBytes`) in the file applied, as a user does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from dwqueue import jobs, queue
from emulators import ollama
from runtimestate import snapshot
from runtimestate.reconcile import steps
from tests.integration.cycle_fixtures import QUICK, Fleet, fleet_file, installed

pytestmark = pytest.mark.timeout(90)
DISK = 2_500_000_000  # llama3.2:1b (1.3 GB) installed; llama3.2:latest (2.0 GB) does not fit


@pytest.fixture
async def node() -> AsyncIterator[ollama.Emulator]:
    async with ollama.running(installed=["llama3.2:1b"], disk_capacity=DISK) as emu:
        yield emu


def _file(emu: ollama.Emulator, prune: str = "managed") -> str:
    backends = {"gpu-1": ("ollama", emu.url, prune)}
    return fleet_file(backends, ["llama3.2"], budgets={"gpu-1": {"diskBytes": DISK}})


def _fleet(migrated_url: str, emu: ollama.Emulator) -> Fleet:
    settings = dataclasses.replace(
        QUICK, cycle=dataclasses.replace(QUICK.cycle, registry_url=emu.url)
    )
    return Fleet(migrated_url, settings)


async def _jobs(fleet: Fleet) -> list[jobs.Job]:
    return list(await fleet.tx(lambda s: queue.list_jobs(s)))


async def test_a_pull_that_does_not_fit_is_held_with_the_numbers_and_never_fails_mid_stream(
    migrated_url: str, node: ollama.Emulator
) -> None:
    fleet = _fleet(migrated_url, node)
    try:
        await fleet.apply(_file(node))
        for _ in range(3):
            report = await fleet.state.run_backend_cycle()
            await fleet.state.run_download_cycle()
            await fleet.state.downloads.drain(5.0)
        (held,) = [a for a in report.plan.of(steps.ReportDrift) if a.model == "llama3.2"]
        assert held.reason.code is steps.ReasonCode.INSUFFICIENT_CAPACITY
        assert held.reason.text.startswith("needs 2.0 GB, 1.2 GB free of 2.5 GB")
        assert not report.plan.of(steps.Pull)
        assert await _jobs(fleet) == []
        assert node.nodes[0].pulls["llama3.2:latest"] == 0
        installed_bytes = 1_321_013_436  # llama3.2:1b, as /api/tags reports it
        assert report.snapshot.backends["gpu-1"].disk == snapshot.DiskView(
            "declared", DISK, installed_bytes, DISK - installed_bytes
        )
        dry = await fleet.state.run_backend_cycle(dry_run=True)
        assert any("needs 2.0 GB, 1.2 GB free of 2.5 GB" in line for line in dry.plan.describe())
    finally:
        await fleet.close()


async def test_a_held_pull_is_queued_in_the_cycle_after_a_prune_makes_room(
    migrated_url: str, node: ollama.Emulator
) -> None:
    fleet = _fleet(migrated_url, node)
    try:
        await fleet.apply(_file(node))
        await fleet.state.run_backend_cycle()
        await fleet.apply(_file(node, "all"))
        pruning = await fleet.state.run_backend_cycle()
        assert [a.model for a in pruning.plan.of(steps.Prune)] == ["llama3.2:1b"]
        (held,) = pruning.plan.of(steps.ReportDrift)  # a prune frees nothing for its own plan
        assert held.reason.code is steps.ReasonCode.INSUFFICIENT_CAPACITY
        admitted = await fleet.state.run_backend_cycle()
        (pull,) = admitted.plan.of(steps.Pull)
        assert "fits: 2.0 GB of 2.5 GB free of 2.5 GB" in pull.reason.text
        await fleet.converge()
        assert installed(node, 0) == {"llama3.2:latest"}
        assert [j.state for j in await _jobs(fleet)] == [jobs.JobState.SUCCEEDED]
    finally:
        await fleet.close()
