"""The executor applying a node backend's instance actions on a real database (SQLite and
Postgres): order, the backend's advisory lock, the managed record, failures as outcomes.

The node agent here is an in-test object implementing `base.InstanceManager` and
`base.Deleter` that records what it was asked, in order, and whether the backend's lock was
held by someone else at that moment; the adapter over a real agent is tested with it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from runtimestate import clock, database, desired, errors, locks
from runtimestate.desired import engineargs, spec
from runtimestate.reconcile import execution, plan, status, steps

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
LLAMA = "meta-llama/Llama-3.2-1B"
LONG = engineargs.VllmArgs(max_model_len=8192)
SECRET = "sk-node-token-1234567890"


def reason(code: steps.ReasonCode = steps.ReasonCode.NO_INSTANCE) -> steps.Reason:
    return steps.Reason(code, "test")


@dataclasses.dataclass
class RecordingAgent:
    """A node agent's adapter that does nothing but note each call and whether another
    session could take the backend's lock then (it must not: the executor holds it)."""

    other: AsyncEngine
    refuse: dict[str, errors.LlmctlError] = dataclasses.field(default_factory=dict)
    calls: list[str] = dataclasses.field(default_factory=list)
    lock_free: list[bool] = dataclasses.field(default_factory=list)

    async def _note(self, call: str) -> None:
        async with locks.backend_lock(self.other, "gpu-1") as acquired:
            self.lock_free.append(acquired)
        self.calls.append(call)
        if call in self.refuse:
            raise self.refuse[call]

    async def start_instance(
        self, name: str, weights: str, vllm: engineargs.VllmArgs | None
    ) -> None:
        await self._note(f"start {name} from {weights} {engineargs.agent_body(vllm)}")

    async def stop_instance(self, name: str) -> None:
        await self._note(f"stop {name}")

    async def delete(self, model: str) -> None:
        await self._note(f"delete {model}")


@dataclasses.dataclass
class Adapters:
    agent: RecordingAgent

    def get(self, backend: spec.BackendSpec) -> object:
        return self.agent

    def redact(self, name: str, text: str) -> str:
        return text.replace(SECRET, "***")


def node_state() -> desired.DesiredState:
    meta = spec.Meta(1, 1, T0, T0)
    return desired.DesiredState(
        backends=(
            spec.Backend(spec.BackendSpec("gpu-1", spec.BackendType.NODE, "http://n"), meta),
        ),
        models=(),
        pools=(),
    )


@pytest.fixture
async def engines(migrated_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    engine = database.create_async_engine(migrated_url)
    other = database.create_async_engine(migrated_url)
    try:
        yield engine, other
    finally:
        await engine.dispose()
        await other.dispose()


async def run(
    engine: AsyncEngine, agent: RecordingAgent, *actions: steps.Action
) -> tuple[execution.Outcome, ...]:
    sessions = database.session_factory(engine)
    executor = execution.Executor(sessions, Adapters(agent), sink=None, clock=clock.FakeClock(T0))
    return await executor.apply(plan.Plan(actions), node_state())


async def managed(engine: AsyncEngine) -> frozenset[tuple[str, str]]:
    return await database.transaction(database.session_factory(engine), status.managed)


async def test_a_node_backends_stops_go_before_its_prunes_and_its_starts_last_under_its_lock(
    engines: tuple[AsyncEngine, AsyncEngine], migrated_url: str
) -> None:
    engine, other = engines
    agent = RecordingAgent(other)
    await database.transaction(
        database.session_factory(engine),
        lambda s: status.record_pulled(s, "gpu-1", QWEN, QWEN, None, T0),
    )
    outcomes = await run(
        engine, agent,
        steps.StartInstance("gpu-1", LLAMA, LLAMA, LONG, reason()),
        steps.Prune("gpu-1", QWEN, reason(steps.ReasonCode.UNDECLARED_MANAGED)),
        steps.StopInstance("gpu-1", QWEN, reason(steps.ReasonCode.UNDECLARED_MANAGED)),
    )  # fmt: skip
    assert [o.ok for o in outcomes] == [True, True, True]
    assert agent.calls == [
        f"stop {QWEN}",
        f"delete {QWEN}",
        f"start {LLAMA} from {LLAMA} {{'engine': {{'max_model_len': 8192}}}}",
    ]
    on_postgres = migrated_url.startswith("postgresql")
    assert agent.lock_free == [not on_postgres] * 3  # SQLite: one replica, no lock to hold
    assert await managed(engine) == {("gpu-1", LLAMA)}  # started: llmctl's; pruned: forgotten


async def test_a_restart_stops_the_instance_then_starts_it_with_the_declared_arguments(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, other = engines
    agent = RecordingAgent(other)
    changed = reason(steps.ReasonCode.ENGINE_CHANGED)
    (outcome,) = await run(engine, agent, steps.RestartInstance("gpu-1", QWEN, QWEN, None, changed))
    assert outcome.ok
    assert agent.calls == [f"stop {QWEN}", f"start {QWEN} from {QWEN} {{'engine': {{}}}}"]
    assert await managed(engine) == {("gpu-1", QWEN)}


async def test_a_start_the_agent_cannot_place_fails_with_its_words_and_is_not_recorded(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, other = engines
    call = f"start {QWEN} from {QWEN} {{'engine': {{}}}}"
    agent = RecordingAgent(other, refuse={call: errors.RequestRejected("needs 1 GPU, 0 free")})
    (outcome,) = await run(engine, agent, steps.StartInstance("gpu-1", QWEN, QWEN, None, reason()))
    assert (outcome.ok, outcome.detail) == (False, "rejected: needs 1 GPU, 0 free")
    assert await managed(engine) == frozenset()


async def test_weights_are_not_pruned_when_stopping_their_instance_failed_and_no_key_leaks(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, other = engines
    refused = errors.BackendUnavailable(f"agent said no to Bearer {SECRET}")
    agent = RecordingAgent(other, refuse={f"stop {QWEN}": refused})
    undeclared = reason(steps.ReasonCode.UNDECLARED)
    stop, prune = await run(
        engine, agent,
        steps.StopInstance("gpu-1", QWEN, undeclared), steps.Prune("gpu-1", QWEN, undeclared),
    )  # fmt: skip
    assert (stop.ok, stop.detail) == (False, "unavailable: agent said no to Bearer ***")
    assert (prune.ok, prune.detail) == (False, "not pruned: stopping its instance failed")
    assert agent.calls == [f"stop {QWEN}"]


class FailingOnce:
    """A session factory whose next session, once `armed`, fails its first statement: the
    database going away just after the agent did what it was asked."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = database.session_factory(engine)
        self.kw = self._sessions.kw  # the backend's lock finds the engine here
        self.armed = False

    def __call__(self) -> AsyncSession:
        session = self._sessions()
        if self.armed:
            self.armed = False

            async def execute(*args: object, **kwargs: object) -> None:
                raise errors.DatabaseUnavailable("the database went away")

            session.execute = execute  # type: ignore[method-assign,assignment]
        return session


async def test_a_record_that_cannot_be_written_is_written_by_the_next_apply(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, other = engines
    sessions = FailingOnce(engine)

    class Arming(RecordingAgent):
        async def start_instance(
            self, name: str, weights: str, vllm: engineargs.VllmArgs | None
        ) -> None:
            await super().start_instance(name, weights, vllm)
            sessions.armed = True  # the record of this start is the next write

    executor = execution.Executor(
        sessions,  # type: ignore[arg-type]
        Adapters(Arming(other)), sink=None, clock=clock.FakeClock(T0),
    )  # fmt: skip
    start = steps.StartInstance("gpu-1", QWEN, QWEN, None, reason())
    (outcome,) = await executor.apply(plan.Plan((start,)), node_state())
    assert not outcome.ok
    assert outcome.detail.startswith("started, but not recorded (retried): ")
    assert await managed(engine) == frozenset()
    await executor.apply(plan.Plan(), node_state())  # the next cycle, with nothing to do
    assert await managed(engine) == {("gpu-1", QWEN)}
