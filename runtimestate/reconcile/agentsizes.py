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

from collections.abc import Iterable, Mapping

from runtimestate import clock as clocks
from runtimestate import errors
from runtimestate.backends import answers, base


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
        self._answers: answers.Answers[tuple[str, str]] = answers.Answers(
            ttl_s=ttl_s, failure_ttl_s=failure_ttl_s, per_lookup=per_lookup,
            deadline_s=deadline_s, clock=clock,
        )  # fmt: skip

    async def lookup(
        self, backend: str, agent: base.WeightsSizer, models: Iterable[str]
    ) -> Mapping[str, int]:
        """The bytes each of ``models`` still needs on ``backend``; unknown ones left out."""

        async def ask(key: tuple[str, str]) -> int | None:
            return await _needed(agent, key[1])

        keys = [(backend, m) for m in sorted(set(models))]
        found = await self._answers.lookup(keys, ask)
        return {model: needed for (_, model), needed in found.items()}

    def retain(self, backends: Iterable[str]) -> None:
        """Forget the answers of backends not in ``backends``."""
        kept = set(backends)
        self._answers.retain(lambda key: key[0] in kept)


async def _needed(agent: base.WeightsSizer, model: str) -> int | None:
    try:
        size = await agent.weights_size(model)
    except errors.LlmctlError:
        return None
    return max(size.bytes - size.present, 0)
