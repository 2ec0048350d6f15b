"""The control subjects as ``serve`` hears them: a request acts only once the database confirms it.

Anyone who may publish on ``<prefix>.v1.control.*`` can send anything, so a message is only a
hint to look at the database now:

- ``.trigger`` names a cycle request a CLI command recorded after committing a change
  (``{"request_id": "..."}``, `runtimestate.reconcile.cyclerequests`). `Control.on_trigger`
  only collects the id; `Control.run` consumes the collected ids from the database in batches
  (one DELETE per batch, however many messages arrived meanwhile) and asks for a backend cycle
  (``request``, rate-limited by `controller.scheduled.Work`) when at least one existed. It also
  removes requests nobody consumed once they are stale.
- ``.cancel`` names a job (``{"job_id": "..."}``); the download worker checks that job's row and
  stops its pull only when the row says it was cancelled (`check`).

A message that names nothing, or something the database does not confirm, is ignored: logged
at debug level and counted in ``llmctl_control_requests_total`` by outcome. Built by
`controller.composition`; it must not run cycles or stop pulls itself, only ask for them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Collection

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from controller import metrics, trigger
from runtimestate import database, errors
from runtimestate.reconcile import cyclerequests

log = structlog.get_logger(__name__)
MAX_PENDING = 10_000  # ids collected between two batches; more are dropped (the flood's)
BATCH = 500  # ids per DELETE statement


class Control:
    """What ``serve`` does with control messages: ``await events.subscribe(subject,
    control.on_trigger)`` and the same for ``on_cancel``; `run` as a task of its own."""

    def __init__(
        self,
        engine: AsyncEngine,
        request: Callable[[], None],
        check: Callable[[str], Awaitable[bool]],
        meter: metrics.Metrics,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sessions = database.session_factory(engine)
        self._request = request
        self._check = check
        self._metrics = meter
        self._now = now
        self._pending: set[str] = set()
        self._wake = asyncio.Event()

    async def on_trigger(self, body: bytes) -> None:
        """Collect the request id ``body`` names for the next batch; never waits on I/O."""
        request_id = trigger.request_id(body)
        if request_id is None or not cyclerequests.is_request_id(request_id):
            log.debug('trigger ignored: not {"request_id": "<32 hex digits>"}')
            self._count("trigger", "malformed")
        elif len(self._pending) >= MAX_PENDING:
            self._count("trigger", "unchecked")
        else:
            self._pending.add(request_id)
            self._wake.set()

    async def on_cancel(self, body: bytes) -> None:
        """Have the download worker check the named job's row; it stops the pull only when
        the database says the job was cancelled."""
        job_id = _job_id(body)
        if job_id is None:
            log.debug('cancel request ignored: not {"job_id": "..."}')
            self._count("cancel", "malformed")
        elif await self._check(job_id):
            log.info("pull stopped on request", job_id=job_id)
            self._count("cancel", "confirmed")
        else:
            log.debug("cancel request ignored: the database does not say cancelled", job_id=job_id)
            self._count("cancel", "unconfirmed")

    async def run(self) -> None:
        """Consume collected trigger ids until cancelled; remove stale requests at start."""
        await self._expire()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, set()
            found = await self._consume(batch)
            if found is None:
                continue
            if found:
                self._request()
                self._count("trigger", "confirmed", found)
            if unknown := len(batch) - found:
                log.debug("triggers ignored: no such cycle request", count=unknown)
                self._count("trigger", "unconfirmed", unknown)

    async def _consume(self, batch: Collection[str]) -> int | None:
        """How many of ``batch`` the database had (now consumed); None when it cannot say."""
        ids = sorted(batch)
        try:
            with database.guarded():
                async with self._sessions() as session, session.begin():
                    await cyclerequests.expire(session, self._now())
                    found = 0
                    for start in range(0, len(ids), BATCH):
                        found += await cyclerequests.consume(session, ids[start : start + BATCH])
            return found
        except (errors.DatabaseUnavailable, sa.exc.DBAPIError) as exc:
            # The scheduled cycles still see every committed change.
            log.warning("triggers not checked: database error", error=database.describe(exc))
            self._count("trigger", "unchecked", len(ids))
            return None

    async def _expire(self) -> None:
        try:
            with database.guarded():
                async with self._sessions() as session, session.begin():
                    await cyclerequests.expire(session, self._now())
        except (errors.DatabaseUnavailable, sa.exc.DBAPIError) as exc:
            log.warning("stale cycle requests not removed", error=database.describe(exc))

    def _count(self, subject: str, outcome: str, n: int = 1) -> None:
        self._metrics.control.labels(subject=subject, outcome=outcome).inc(n)


def _job_id(payload: bytes) -> str | None:
    """The ``job_id`` of a cancel request, or None when the message is not one."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return job_id if isinstance(job_id, str) else None


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel `Control.run`'s task and wait for it to end."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
