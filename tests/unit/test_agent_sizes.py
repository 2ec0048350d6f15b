"""The node agents' pull sizes for admission: cached per backend and model, bounded (issue 16)."""

from __future__ import annotations

import asyncio

from runtimestate import clock, errors
from runtimestate.backends import base
from runtimestate.reconcile import agentsizes


class Agent:
    """A node agent's sizing answers, counted; ``hang`` never answers."""

    def __init__(self, sizes: dict[str, base.WeightsSize], hang: bool = False) -> None:
        self.sizes, self.hang, self.asked = sizes, hang, 0

    async def weights_size(self, source: str) -> base.WeightsSize:
        self.asked += 1
        if self.hang:
            await asyncio.Event().wait()
        if source not in self.sizes:
            raise errors.ModelNotFound(f"{source}: not on the hub", backend="gpu-1")
        return self.sizes[source]


async def test_a_pull_needs_its_bytes_less_those_already_cached_and_unknown_ones_are_left_out() -> (
    None
):
    agent = Agent({"org/a": base.WeightsSize(10, 4), "org/b": base.WeightsSize(7, 0)})
    found = await agentsizes.AgentSizes().lookup("gpu-1", agent, ["org/a", "org/b", "org/x"])
    assert found == {"org/a": 6, "org/b": 7}


async def test_an_agent_is_asked_once_per_model_per_ttl_not_every_cycle() -> None:
    fake = clock.FakeClock()
    sizes = agentsizes.AgentSizes(ttl_s=60.0, clock=fake)
    agent = Agent({"org/a": base.WeightsSize(10, 0)})
    for _ in range(3):
        assert await sizes.lookup("gpu-1", agent, ["org/a"]) == {"org/a": 10}
    assert agent.asked == 1
    await sizes.lookup("gpu-2", agent, ["org/a"])  # another node's cache is another answer
    fake.advance(61.0)
    await sizes.lookup("gpu-1", agent, ["org/a"])
    assert agent.asked == 3


async def test_an_agent_that_does_not_answer_leaves_the_size_unknown_after_the_deadline() -> None:
    sizes = agentsizes.AgentSizes(deadline_s=0.05)
    agent = Agent({"org/a": base.WeightsSize(10, 0)}, hang=True)
    assert await asyncio.wait_for(sizes.lookup("gpu-1", agent, ["org/a"]), 2.0) == {}
    assert await sizes.lookup("gpu-1", agent, ["org/a"]) == {}
    assert agent.asked == 1  # the failure is kept for a while
