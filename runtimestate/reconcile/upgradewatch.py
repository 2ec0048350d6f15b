"""The backend cycle's look upstream: which declared models have a newer revision (issue 19).

`Watch.look(views, usable, now)` learns, before the cycle plans, what upstream has for the
declared models the backends hold; `Watch.marked(states)` then gives the cycle's states with
``UpdateAvailable`` where a backend holds an older copy (`runtimestate.reconcile.upgrades`),
and `Watch.known` what `runtimestate.reconcile.rolling` rolls onto. It asks upstream
(`runtimestate.backends.upstream`) only for the models whose stored check
(`runtimestate.reconcile.upgradechecks`) is older than the interval, and only after claiming
them, so the deployment asks once per model per interval however many cycles, replicas or
``reconcile --once`` run; a steady fleet costs no query at all (the rows read are kept until
they fall due). A dry run asks nothing and claims nothing. An upstream that cannot be reached
changes nothing: what was known stays, and one warning is logged when a model's checks start
failing (not every interval). A database that fails is logged; the states keep what was known.

Called by `runtimestate.reconcile.cycle` only; it must not plan, act or write the status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runtimestate import database, snapshot
from runtimestate.backends import base, registry, upstream
from runtimestate.desired import names
from runtimestate.reconcile import failures, planview, upgradechecks, upgrades

log = structlog.get_logger(__name__)
_IN_FLIGHT = dt.timedelta(minutes=1)  # a claim another process may still be answering


@dataclasses.dataclass(frozen=True)
class Settings:
    interval_s: float = 3600.0  # per model; never per cycle
    registry_url: str | None = registry.DEFAULT_URL  # Ollama models; None: not checked
    hub_url: str | None = upstream.DEFAULT_HUB_URL  # node agents' weights; None: not checked
    concurrency: int = 4  # questions upstream at once
    deadline_s: float = 5.0  # what has not answered by then is a failure
    hub_token: str | None = dataclasses.field(default=None, repr=False)  # private repos


class Watch:
    """The upgrade checks of one backend cycle's process; one event loop uses it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        asker: upstream.Upstream,
        settings: Settings = Settings(),
    ) -> None:
        self._sessions, self._asker, self._settings = sessions, asker, settings
        self._interval = dt.timedelta(seconds=settings.interval_s)
        self._checks: dict[upgrades.Source, upgradechecks.Check] = {}
        self._semaphore = asyncio.Semaphore(settings.concurrency)

    @classmethod
    def built(
        cls, sessions: async_sessionmaker[AsyncSession], settings: Settings | None
    ) -> Watch | None:
        """A watch asking the settings' registry and hub; None when ``settings`` is None."""
        if settings is None:
            return None
        asker = upstream.Upstream(
            settings.registry_url, settings.hub_url, hub_token=settings.hub_token
        )
        return cls(sessions, asker, settings)

    def known(self) -> dict[upgrades.Source, upgrades.Latest]:
        """The revisions known upstream, from the checks read so far."""
        return {s: latest for s, c in self._checks.items() if (latest := c.known()) is not None}

    async def look(
        self,
        views: Mapping[str, planview.BackendView],
        usable: Callable[[str], base.Observation | None],
        now: dt.datetime,
        *,
        ask: bool = True,
    ) -> None:
        """Learn what upstream has for the declared models the backends hold: from the stored
        checks, and by asking upstream about those that are due (none when ``ask`` is false).
        Raises nothing but a cancellation."""
        wanted = {s for s in _held(views, usable) if self._asker.asks(s.kind)}
        stale = [s for s in sorted(wanted) if self._stale(s, now)]
        if stale:
            try:
                await self._refresh(stale, now, ask)
            except Exception as exc:  # logged by failures.logged; what was known stays
                failures.logged("checking for upgrades", exc)

    def marked(self, states: Mapping[str, snapshot.LLMState]) -> dict[str, snapshot.LLMState]:
        """``states`` with ``UpdateAvailable`` where an upgrade is known."""
        return upgrades.marked(states, self.known())

    def _stale(self, source: upgrades.Source, now: dt.datetime) -> bool:
        """Whether the row must be read again: unknown here, due, or being answered."""
        check = self._checks.get(source)
        if check is None or now - check.checked_at >= self._interval:
            return True
        return not check.answered and now - check.checked_at < _IN_FLIGHT

    async def _refresh(self, stale: list[upgrades.Source], now: dt.datetime, ask: bool) -> None:
        async def claim(session: AsyncSession) -> list[upgrades.Source]:
            found = await upgradechecks.load(session, stale)
            self._checks.update(found)
            if not ask:
                return []
            due = [(s, found.get(s)) for s in stale if s not in found or self._due(found[s], now)]
            return await upgradechecks.claim(session, due, now)

        won = await database.transaction(self._sessions, claim)
        if not won:
            return
        outcomes = dict(zip(won, await self._ask_all(won), strict=True))
        before = {s: self._checks[s] for s in won if s in self._checks}
        await database.transaction(
            self._sessions, lambda s: upgradechecks.answer(s, outcomes, before, now)
        )
        for source, outcome in outcomes.items():
            self._checks[source] = self._after(source, before.get(source), outcome, now)

    def _due(self, check: upgradechecks.Check, now: dt.datetime) -> bool:
        return now - check.checked_at >= self._interval

    async def _ask_all(self, sources: list[upgrades.Source]) -> list[str | Exception]:
        tasks = [asyncio.ensure_future(self._ask(s)) for s in sources]
        _, late = await asyncio.wait(tasks, timeout=self._settings.deadline_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        return [
            upstream.UpstreamError("no answer in time") if t.cancelled() else t.result()
            for t in tasks
        ]

    async def _ask(self, source: upgrades.Source) -> str | Exception:
        async with self._semaphore:
            try:
                return await self._asker.latest(source.kind, source.reference)
            except upstream.UpstreamError as exc:
                return exc

    def _after(
        self,
        source: upgrades.Source,
        old: upgradechecks.Check | None,
        outcome: str | Exception,
        now: dt.datetime,
    ) -> upgradechecks.Check:
        """The row as `upgradechecks.answer` left it; logs a failure that starts a streak."""
        old = old or upgradechecks.Check(source, now)
        if isinstance(outcome, Exception):
            if old.error is None:
                log.warning("upgrade check failed", source=source.kind,
                            model=source.reference, error=str(outcome))  # fmt: skip
            return dataclasses.replace(old, checked_at=now, answered_at=now, error=str(outcome))
        seen = old.seen_at if old.latest == outcome and old.seen_at else now
        if old.latest is not None and old.latest != outcome:
            log.info("upgrade available", source=source.kind, model=source.reference,
                     digest=outcome[:12])  # fmt: skip
        return dataclasses.replace(
            old, checked_at=now, answered_at=now, latest=outcome, seen_at=seen, error=None
        )

    async def aclose(self) -> None:
        """Close upstream's connections."""
        await self._asker.aclose()


def _held(
    views: Mapping[str, planview.BackendView], usable: Callable[[str], base.Observation | None]
) -> Iterator[upgrades.Source]:
    """The sources of the declared models the backends report with a digest."""
    for view in views.values():
        observation = usable(view.name)
        if observation is None or upgrades.source_of(view.type.value, "") is None:
            continue
        declared = {names.key(d.name, view.type) for d in view.desired}
        for model in observation.models:
            if model.digest and names.key(model.name, view.type) in declared:
                source = upgrades.source_of(view.type.value, model.name)
                if source is not None:
                    yield source
