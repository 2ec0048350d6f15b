"""A backend in no pool is observed only; a backend in an empty pool follows its policy.

DESIGN section 3: a backend in no pool is observed only. Section 5: an empty desired set
prunes nothing unless the policy is `all`. Dropping a backend from its pools (`apply --prune`
of a file whose pool no longer lists it) must therefore not wipe it, even under `prune: all`.
"""

from __future__ import annotations

import pytest

from emulators import ollama
from runtimestate.reconcile import steps
from tests.integration.cycle_fixtures import Fleet, fleet_file

pytestmark = pytest.mark.timeout(120)


def _installed(emu: ollama.Emulator) -> set[str]:
    return {m.spec.name for m in emu.nodes[0].installed.values()}


def _pool(backends: str, models: str) -> str:
    return (
        "apiVersion: llmctl/v1\nkind: Pool\nmetadata: {name: main}\n"
        f"spec: {{backends: [{backends}], models: [{models}]}}\n"
    )


async def test_dropping_a_backend_from_its_pool_under_prune_all_deletes_nothing(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=["nomic-embed-text"]) as emu:
        node = {"gpu-0": ("ollama", emu.url, "all")}
        declared = fleet_file(node, ["qwen2:0.5b", "llama3.2:1b"])
        await fleet.apply(declared)
        await fleet.converge()
        assert _installed(emu) == {"qwen2:0.5b", "llama3.2:1b"}  # prune: all took the rest
        deletes = emu.nodes[0].requests["DELETE /api/delete"]

        # The same file, but the pool no longer lists the backend.
        dropped = declared.replace("backends: [gpu-0]", "backends: []")
        assert dropped != declared
        await fleet.apply(dropped, prune=True)
        report = await fleet.converge(cycles=3)
        assert report.plan.of(steps.Prune) == ()
        assert emu.nodes[0].requests["DELETE /api/delete"] == deletes
        assert _installed(emu) == {"qwen2:0.5b", "llama3.2:1b"}
        kept = fleet.state.get().backends["gpu-0"].condition("ServedNotDeclared")
        assert kept is not None
        assert kept.reason == "not_in_pool"


async def test_a_backend_in_a_pool_that_lists_no_model_is_emptied_under_prune_all(
    fleet: Fleet,
) -> None:
    async with ollama.running(installed=["nomic-embed-text", "qwen2:0.5b"]) as emu:
        backend = fleet_file({"gpu-0": ("ollama", emu.url, "all")}, [])
        backend = backend.split("---\n")[0]
        await fleet.apply(f"{backend}---\n{_pool('gpu-0', '')}")
        await fleet.converge()
        assert _installed(emu) == set()
