"""An application on three emulated Ollama nodes: one starts failing, is avoided, and comes back.

Real HTTP through the official ``ollama.AsyncClient`` to each chosen provider's base URL; the
application records every outcome; the clock that drives the cooldown is the test's.
"""

from __future__ import annotations

import httpx
import ollama

from emulators import faults
from emulators import ollama as emulator
from runtimestate import resolver
from tests.unit.test_resolver import Clock, backend, fleet, make, model

# Round robin ignores error rates, so only the breaker can keep the failing node away.
REQUEST = resolver.Request(
    models=("qwen2:0.5b",), capability="chat", policy=resolver.Policy.ROUND_ROBIN
)
MESSAGES = [{"role": "user", "content": "hi"}]


class App:
    """What an application does: resolve, try the choice then the fallbacks, report outcomes."""

    def __init__(self, r: resolver.Resolver) -> None:
        self.r = r
        self.clients: dict[str, ollama.AsyncClient] = {}  # one per node, as an app keeps them
        self.attempts: list[str] = []
        self.trials: list[str] = []

    async def call(self) -> str:
        resolution = self.r.resolve(REQUEST)
        if resolution.trial:
            self.trials.append(resolution.provider.backend)
        for provider in resolution.providers():
            self.attempts.append(provider.backend)
            client = self.clients.setdefault(
                provider.base_url, ollama.AsyncClient(host=provider.base_url)
            )
            try:
                with self.r.attempt(provider):
                    await client.chat(provider.model, messages=MESSAGES)
            except (ollama.ResponseError, httpx.HTTPError):
                continue
            return provider.backend
        raise AssertionError("every provider failed")


async def test_a_failing_node_is_avoided_then_returns_after_cooldown_and_a_good_trial() -> None:
    async with emulator.running(nodes=3, installed=["qwen2:0.5b"]) as emu:
        snap = fleet(
            *(
                backend(f"node-{i}", model("qwen2:0.5b", 32768), base_url=emu.node_url(i))
                for i in range(3)
            )
        )
        clock = Clock()
        r = make(snap, clock)
        app = App(r)
        served = [await app.call() for _ in range(6)]
        assert sorted(served) == ["node-0", "node-0", "node-1", "node-1", "node-2", "node-2"]

        emu.set_fault(faults.Fault(faults.FaultKind.HTTP_500), node=1)
        app.attempts.clear()
        assert "node-1" not in [await app.call() for _ in range(12)]
        assert app.attempts.count("node-1") == 3  # three failures open its breaker ...
        last_failure = max(i for i, name in enumerate(app.attempts) if name == "node-1")
        assert len(app.attempts[last_failure + 1 :]) >= 4
        assert "node-1" not in app.attempts[last_failure + 1 :]  # ... and then it is avoided
        assert [e.reason for e in r.resolve(REQUEST).excluded] == [resolver.Reason.COOLING_DOWN]

        emu.clear_faults()
        clock.advance(29)
        app.attempts.clear()
        await app.call()
        assert "node-1" not in app.attempts  # still cooling down
        assert app.trials == []

        clock.advance(1)
        assert await app.call() == "node-1"  # its one trial, and it succeeds
        assert app.trials == ["node-1"]
        assert r.resolve(REQUEST).excluded == ()
        back = [await app.call() for _ in range(6)]
        assert back.count("node-1") == 2  # a full share again
