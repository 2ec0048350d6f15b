"""What a backend cycle reads, on one database snapshot: the desired state, the jobs, llmctl's
records (pulled, preloaded, adapters loaded) and the persisted status when it is needed.

Called by `runtimestate.reconcile.cycle` only (`read`, `selected` for a pass given a label
selector, `jobs_of` to re-read the queue after applying). Reads only; raises what the database
raises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from dwqueue import jobs, queue
from runtimestate import desired, snapshot
from runtimestate.desired import selectors, store
from runtimestate.reconcile import preloads, status


@dataclasses.dataclass(frozen=True)
class Read:
    desired: desired.DesiredState
    jobs: tuple[jobs.Job, ...]
    managed: frozenset[tuple[str, str]]
    previous: Mapping[str, snapshot.LLMState]
    loaded: bool = False  # `previous` was read from the database (first cycle, or unwritten)
    complete: bool = False  # every query of the read returned: the planner may prune, cancel
    preloaded: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    adapters: frozenset[tuple[str, str]] = frozenset()  # (backend, adapter) llmctl loaded


async def read(session: AsyncSession, previous: Mapping[str, snapshot.LLMState] | None) -> Read:
    """Everything a cycle reads; ``previous`` is the status the cycle last wrote (None on the
    first cycle, or when that write failed: then it is read from the database)."""
    state = await store.load(session)
    found = await jobs_of(session)
    managed = await status.managed(session)
    preloaded = await preloads.load(session)
    loras = await status.managed_adapters(session)
    loaded = previous is None
    if previous is None:
        previous = await status.load_states(session)
    return Read(state, found, managed, previous, loaded, True, preloaded, loras)


def selected(read: Read, selector: selectors.Selector) -> Read:
    """What a pass over the backends whose labels match ``selector`` sees: those backends (the
    pools and models unchanged), their jobs, their persisted status and managed models."""
    backends = tuple(b for b in read.desired.backends if selector.matches(b.spec.labels))
    names = {b.name for b in backends}
    return dataclasses.replace(
        read,
        desired=dataclasses.replace(read.desired, backends=backends),
        jobs=tuple(j for j in read.jobs if j.backend in names),
        managed=frozenset(pair for pair in read.managed if pair[0] in names),
        adapters=frozenset(pair for pair in read.adapters if pair[0] in names),
        previous={name: s for name, s in read.previous.items() if name in names},
    )


async def jobs_of(session: AsyncSession) -> tuple[jobs.Job, ...]:
    """The newest job of every (backend, model) plus every active one, deduplicated."""
    latest = await queue.latest(session)
    active = await queue.list_jobs(session, states=[jobs.JobState.QUEUED, jobs.JobState.RUNNING])
    found = {job.id: job for job in (*latest.values(), *active)}
    return tuple(found.values())
