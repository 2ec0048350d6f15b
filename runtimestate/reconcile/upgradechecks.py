"""The stored upgrade checks (table ``upgrade_checks``): what upstream had, and when it was asked.

Every replica and every ``reconcile --once`` shares these rows, so a model's upstream is asked
once per interval by the whole deployment: a process asks only after `claim` won the row (an
insert of a new row, or an update conditional on the ``checked_at`` it read), then `answer`
records what it learnt. Functions take a session and never commit; they must not read or write
any other table. Called by `runtimestate.reconcile.upgradewatch` and ``llmctl model upgrades``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.desired import schema
from runtimestate.reconcile import upgrades

_ERROR_CHARS = 500


@dataclasses.dataclass(frozen=True)
class Check:
    """One row: claimed at ``checked_at``, answered at ``answered_at`` (None: never)."""

    source: upgrades.Source
    checked_at: dt.datetime
    answered_at: dt.datetime | None = None
    latest: str | None = None
    seen_at: dt.datetime | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        """Whether the last claim has its outcome recorded."""
        return self.answered_at is not None and self.answered_at >= self.checked_at

    def known(self) -> upgrades.Latest | None:
        """The revision upstream had when last answered, if it ever was."""
        if self.latest is None or self.seen_at is None:
            return None
        return upgrades.Latest(self.latest, self.seen_at)


def _check(row: Any) -> Check:
    return Check(
        upgrades.Source(row.source, row.reference), row.checked_at, row.answered_at,
        row.latest, row.seen_at, row.error,
    )  # fmt: skip


async def load(
    session: AsyncSession, sources: Collection[upgrades.Source] | None = None
) -> dict[upgrades.Source, Check]:
    """The checks of ``sources`` that exist (every check when None)."""
    table = schema.UpgradeCheckRow
    query = sa.select(table)
    if sources is not None:
        if not sources:
            return {}
        query = query.where(table.reference.in_(sorted({s.reference for s in sources})))
    found = {c.source: c for c in map(_check, (await session.execute(query)).scalars())}
    return found if sources is None else {s: c for s, c in found.items() if s in sources}


async def claim(
    session: AsyncSession,
    due: Iterable[tuple[upgrades.Source, Check | None]],
    now: dt.datetime,
) -> list[upgrades.Source]:
    """Claim the checks of ``due`` (each with the row read, None: none yet) at ``now``; the
    sources this session won. Another process that claimed one since it was read wins it."""
    table = schema.UpgradeCheckRow
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    won = []
    for source, seen in due:
        statement: Any
        if seen is None:
            statement = dialect.insert(table).values(
                source=source.kind, reference=source.reference, checked_at=now
            )
            statement = statement.on_conflict_do_nothing()
        else:
            keys = (table.source == source.kind, table.reference == source.reference)
            statement = sa.update(table).where(*keys, table.checked_at == seen.checked_at)
            statement = statement.values(checked_at=now)
        # RETURNING, not rowcount: drivers differ on an insert that did nothing.
        if (await session.execute(statement.returning(table.reference))).first() is not None:
            won.append(source)
    return won


async def answer(
    session: AsyncSession,
    outcomes: Mapping[upgrades.Source, str | Exception],
    previous: Mapping[upgrades.Source, Check],
    now: dt.datetime,
) -> None:
    """Record each claimed check's outcome: the revision upstream has (``seen_at`` moves only
    when it changed), or the failure (what was known stays)."""
    table = schema.UpgradeCheckRow
    for source, outcome in outcomes.items():
        values: dict[str, Any] = {"answered_at": now}
        if isinstance(outcome, Exception):
            values["error"] = (str(outcome) or type(outcome).__name__)[:_ERROR_CHARS]
        else:
            old = previous.get(source)
            values.update(latest=outcome, error=None)
            if old is None or old.latest != outcome or old.seen_at is None:
                values["seen_at"] = now
        await session.execute(
            sa.update(table)
            .where(table.source == source.kind, table.reference == source.reference)
            .values(values)
        )
