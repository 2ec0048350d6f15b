"""Held downloads (cancelled by a user, failed permanently) on the real store and cycle.

A held download is queued again only when *its* declaration changes — the model is edited, or
the model or the backend leaves the pool and comes back — or a user retries it. Editing the
pool for other members (another model, another backend) is not a change of its declaration.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import jobs, queue
from emulators import ollama
from runtimestate.desired import poolstore, spec, store
from runtimestate.reconcile import cycle, planview, steps
from tests.integration.cycle_fixtures import Fleet, fleet_file

pytestmark = pytest.mark.timeout(120)
C = steps.ReasonCode


# --- the declaration keys the store's desired state gives ------------------------------------


async def _declarations(session: AsyncSession, backend: str = "gpu-0") -> dict[str, str]:
    state = await store.load(session)
    return {m.name: m.declaration for m in planview.desired_models(state, backend)}


def _backend(name: str) -> spec.BackendSpec:
    return spec.make_backend(name, "ollama", f"http://{name}.local:11434")


async def _member(session: AsyncSession, member: bool, **which: str) -> None:
    assert await poolstore.set_membership(session, spec.DEFAULT_POOL, member=member, **which)


async def test_other_members_joining_or_leaving_the_pool_keep_a_declaration(
    session: AsyncSession,
) -> None:
    await store.add_backend(session, _backend("gpu-0"))
    await store.add_model(session, spec.ModelSpec("llama3"))
    before = (await _declarations(session))["llama3"]
    await store.add_model(session, spec.ModelSpec("qwen2:0.5b"))  # joins the default pool
    await store.add_backend(session, _backend("gpu-1"))
    await store.add_model(session, spec.ModelSpec("phi3"), pools=())
    await _member(session, True, model="phi3")
    await store.add_backend(session, _backend("gpu-2"), pools=())
    await store.update_backend(session, _backend("gpu-2"), pools=[spec.DEFAULT_POOL])
    await poolstore.update_pool(
        session, spec.PoolSpec(spec.DEFAULT_POOL, "edited", ("gpu-0", "gpu-2"), ("llama3",))
    )
    await session.commit()
    assert (await _declarations(session))["llama3"] == before


async def test_a_model_or_backend_leaving_the_pool_and_coming_back_is_a_new_declaration(
    session: AsyncSession,
) -> None:
    await store.add_backend(session, _backend("gpu-0"))
    await store.add_model(session, spec.ModelSpec("llama3"))
    seen = {(await _declarations(session))["llama3"]}
    await _member(session, False, model="llama3")
    await _member(session, True, model="llama3")
    seen.add((await _declarations(session))["llama3"])
    await _member(session, False, backend="gpu-0")
    await _member(session, True, backend="gpu-0")
    seen.add((await _declarations(session))["llama3"])
    await store.update_model(session, spec.ModelSpec("llama3"), pools=())
    await store.update_model(session, spec.ModelSpec("llama3"), pools=[spec.DEFAULT_POOL])
    seen.add((await _declarations(session))["llama3"])
    await store.update_model(session, spec.ModelSpec("llama3", context_length=4096))
    seen.add((await _declarations(session))["llama3"])
    await session.commit()
    assert len(seen) == 5


# --- the backend cycle holds and re-queues ----------------------------------------------------


def _held(report: cycle.Report) -> dict[tuple[str, str], steps.ReasonCode]:
    return {(h.backend, h.model): h.reason.code for h in report.plan.of(steps.Hold)}


def _pulled(report: cycle.Report) -> dict[tuple[str, str], steps.ReasonCode]:
    return {(p.backend, p.model): p.reason.code for p in report.plan.of(steps.Pull)}


async def _cancel_queued(fleet: Fleet, backend: str, model: str) -> None:
    queued = await fleet.tx(lambda s: queue.list_jobs(s, states=[jobs.JobState.QUEUED]))
    (job,) = [j for j in queued if (j.backend, j.model) == (backend, model)]
    await fleet.tx(lambda s: queue.cancel(s, job.id))


async def test_a_cancelled_download_stays_held_when_the_pool_gains_a_model_or_a_backend(
    fleet: Fleet,
) -> None:
    async with ollama.running(nodes=2) as emu:
        one = {"gpu-0": ("ollama", emu.node_url(0), "managed")}
        two = {**one, "gpu-1": ("ollama", emu.node_url(1), "managed")}
        await fleet.apply(fleet_file(one, ["qwen2:0.5b"]))
        first = await fleet.state.run_backend_cycle()
        assert _pulled(first) == {("gpu-0", "qwen2:0.5b"): C.MISSING}
        await _cancel_queued(fleet, "gpu-0", "qwen2:0.5b")
        held = {("gpu-0", "qwen2:0.5b"): C.HELD_CANCELLED}
        assert _held(await fleet.state.run_backend_cycle()) == held

        await fleet.apply(fleet_file(one, ["qwen2:0.5b", "nomic-embed-text"]))
        gained_model = await fleet.state.run_backend_cycle()
        assert _held(gained_model) == held
        assert _pulled(gained_model) == {("gpu-0", "nomic-embed-text"): C.MISSING}

        await fleet.apply(fleet_file(two, ["qwen2:0.5b", "nomic-embed-text"]))
        gained_backend = await fleet.state.run_backend_cycle()
        assert _held(gained_backend) == held
        assert _pulled(gained_backend) == {
            ("gpu-1", "nomic-embed-text"): C.MISSING,
            ("gpu-1", "qwen2:0.5b"): C.MISSING,
        }

        # The model leaves the pool and comes back: its declaration changed, so it is queued.
        await fleet.apply(fleet_file(two, ["nomic-embed-text"]))
        left = await fleet.state.run_backend_cycle()
        assert _held(left) == {}
        await fleet.apply(fleet_file(two, ["qwen2:0.5b", "nomic-embed-text"]))
        back = await fleet.state.run_backend_cycle()
        assert _held(back) == {}
        assert _pulled(back)[("gpu-0", "qwen2:0.5b")] is C.DECLARATION_CHANGED


async def test_a_permanently_failed_download_stays_held_when_the_pool_gains_a_model(
    fleet: Fleet,
) -> None:
    async with ollama.running() as emu:
        one = {"gpu-0": ("ollama", emu.url, "managed")}
        await fleet.apply(fleet_file(one, ["no-such-model:1b"]))
        await fleet.state.run_backend_cycle()
        await fleet.state.run_download_cycle()
        await fleet.state.downloads.drain(5.0)
        held = {("gpu-0", "no-such-model:1b"): C.HELD_FAILED}
        assert _held(await fleet.state.run_backend_cycle()) == held

        await fleet.apply(fleet_file(one, ["no-such-model:1b", "qwen2:0.5b"]))
        gained = await fleet.state.run_backend_cycle()
        assert _held(gained) == held
        assert _pulled(gained) == {("gpu-0", "qwen2:0.5b"): C.MISSING}

        # An edit of the model itself is a new declaration.
        await fleet.tx(
            lambda s: store.update_model(s, spec.ModelSpec("no-such-model:1b", context_length=8192))
        )
        edited = await fleet.state.run_backend_cycle()
        assert _pulled(edited)[("gpu-0", "no-such-model:1b")] is C.DECLARATION_CHANGED
