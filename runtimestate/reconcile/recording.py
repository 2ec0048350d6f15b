"""Recording what the backend cycle saw: states written where they changed, then published.

`Recorder` is called by `runtimestate.reconcile.cycle` after a pass (every backend's state, the
cycle summary) and after a status refresh (one backend's state). It writes through
`runtimestate.reconcile.status` in one transaction, publishes only after that commit, and keeps
the last states written, so a steady fleet writes and publishes nothing. It must not observe or
plan, and it never raises for a failed write: that is logged, the last states written stay the
reference, and the next cycle writes (and publishes) the changes again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dwqueue import events
from runtimestate import database, snapshot
from runtimestate.reconcile import failures, preloads, status


class MessageSink(Protocol):
    """Where a cycle's news goes after commit (`dwqueue.publisher.Publisher`); never raises."""

    async def publish(self, event: events.DownloadEvent) -> bool: ...

    async def publish_message(self, subject: str, payload: bytes) -> bool: ...


class Recorder:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], sink: MessageSink | None, prefix: str
    ) -> None:
        self._sessions = sessions
        self._sink = sink
        self._prefix = prefix
        self._previous: dict[str, snapshot.LLMState] | None = None

    @property
    def previous(self) -> Mapping[str, snapshot.LLMState] | None:
        """The states last written (None before the first write, or after one failed)."""
        return self._previous

    def forget(self) -> None:
        """Make the next pass read the persisted status afresh (after a pass that wrote only
        some backends' states: the ones written are not all there is)."""
        self._previous = None

    async def record_states(
        self,
        states: dict[str, snapshot.LLMState],
        before: Mapping[str, snapshot.LLMState],
        now: dt.datetime,
    ) -> bool:
        """Write the states that changed, drop the gone ones, then publish both.

        False when the write failed (logged): the states last written stay the reference, so
        the next cycle writes (and publishes) these changes again.
        """
        gone = [name for name in before if name not in states]

        async def write(session: AsyncSession) -> list[str]:
            changed = await status.write_states(session, states, before, now)
            await status.forget_backends(session, gone)
            await preloads.forget_backends(session, gone)  # warm models (issue 16)
            return changed

        try:
            changed = await database.transaction(self._sessions, write)
        except Exception as exc:  # logged by failures.logged, retried next cycle
            failures.logged("writing the status", exc, backends=len(states))
            return False
        self._previous = dict(states)
        if self._sink is None:
            return True  # nothing to publish to: do not encode 1,000 states for nobody
        for name in changed:
            await self.publish(self._state_subject(name), snapshot.to_wire(states[name]))
        for name in gone:  # resolvers elsewhere stop routing to it now, not at their resync
            await self.publish(self._state_subject(name), snapshot.removed_to_wire(name))
        return True

    async def record_refresh(
        self, state: snapshot.LLMState, before: snapshot.LLMState | None, now: dt.datetime
    ) -> bool:
        """Write and publish one refreshed state; False when it was not written."""
        previous = {state.name: before} if before is not None else {}
        try:
            changed = await database.transaction(
                self._sessions,
                lambda s: status.write_state_observed(s, state, previous, observed_at=now),
            )
        except Exception as exc:  # logged by failures.logged: the next cycle writes it
            failures.logged("writing a refreshed status", exc, backend=state.name)
            return False
        if changed is None:
            return False  # a newer observation is stored: ours is not the news
        if self._previous is not None:
            self._previous = {**self._previous, state.name: state}
        if changed:
            await self.publish(self._state_subject(state.name), snapshot.to_wire(state))
        return True

    async def publish_summary(self, summary: Mapping[str, object]) -> None:
        """Publish a cycle's summary on ``<prefix>.v1.cycles``."""
        await self.publish(f"{self._prefix}.v1.cycles", json.dumps(summary).encode())

    async def publish(self, subject: str, payload: bytes) -> None:
        if self._sink is not None:
            await self._sink.publish_message(subject, payload)

    def _state_subject(self, name: str) -> str:
        return f"{self._prefix}.v1.state.{name}"
