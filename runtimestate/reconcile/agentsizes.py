"""What pulls onto node agents would take: each agent's answer, cached per backend and model.

`AgentSizes.lookup` asks a node agent (`base.WeightsSizer.weights_size`, ``GET
/v1/weights/size``) for the bytes a pull of each given model still needs (its size less the
bytes already in the agent's cache), for the backend cycle's admission lookup
(`runtimestate.reconcile.capacity`). Answers are kept for `ttl_s` (failures for
`failure_ttl_s`), at most `per_lookup` new ones are asked per backend per cycle, a lookup waits
`deadline_s` at most, and a model it cannot size is left out (pulled as before). Reads
`clock.monotonic` only; must not plan or write.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping

from runtimestate import clock as clocks
from runtimestate import errors
from runtimestate.backends import base


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    needed: int | None  # None: could not be sized
    until: float


class AgentSizes:
    """Cached bytes-still-needed of models on node agents; one per backend cycle."""

    def __init__(
        self,
        *,
        ttl_s: float = 600.0,
        failure_ttl_s: float = 60.0,
        per_lookup: int = 8,
        deadline_s: float = 5.0,
        clock: clocks.Clock = clocks.SYSTEM,
    ) -> None:
        self._ttl_s, self._failure_ttl_s, self._per_lookup = ttl_s, failure_ttl_s, per_lookup
        self._deadline_s = deadline_s
        self._clock = clock
        self._cache: dict[tuple[str, str], _Answer] = {}

    async def lookup(
        self, backend: str, agent: base.WeightsSizer, models: Iterable[str]
    ) -> Mapping[str, int]:
        """The bytes each of ``models`` still needs on ``backend``; unknown ones left out."""
        now = self._clock.monotonic()
        wanted = sorted(set(models))
        due = [m for m in wanted if (a := self._cache.get((backend, m))) is None or a.until <= now]
        due = due[: self._per_lookup]
        tasks = [asyncio.ensure_future(_needed(agent, m)) for m in due]
        if tasks:  # an agent that does not answer holds the cycle up `deadline_s` at most
            _, late = await asyncio.wait(tasks, timeout=self._deadline_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for model, task in zip(due, tasks, strict=True):
            needed = None if task.cancelled() else task.result()
            ttl = self._ttl_s if needed is not None else self._failure_ttl_s
            self._cache[(backend, model)] = _Answer(needed, self._clock.monotonic() + ttl)
        answers = {m: self._cache.get((backend, m)) for m in wanted}
        return {m: a.needed for m, a in answers.items() if a is not None and a.needed is not None}

    def retain(self, backends: Iterable[str]) -> None:
        """Forget the answers of backends not in ``backends``."""
        kept = set(backends)
        for key in [k for k in self._cache if k[0] not in kept]:
            del self._cache[key]


async def _needed(agent: base.WeightsSizer, model: str) -> int | None:
    try:
        size = await agent.weights_size(model)
    except errors.LlmctlError:
        return None
    return max(size.bytes - size.present, 0)
