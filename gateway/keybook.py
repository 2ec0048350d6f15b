"""The running gateway's copy of the key store: keys, prices and spend, kept in memory.

`KeyBook.sync` (every second, by `KeyBook.run`) writes the costs counted since the last sync
(`charge`) with `gateway.keystore.add_spend`, then reads back what changed: the keys when
their `gateway.keystore.marker` moved (a key created, updated or revoked on any replica or by
``llmctl key``), the price table, and every key's spend in the current periods (what all
replicas wrote). The request path reads only memory (`keyring`, `prices`, `spent`), never
the database. A batch the database refused (it is away, briefly) is kept and written with
the next one, and once more by `close`; nothing logged names a key's secret or the database's
password. Called by `gateway.keygate`; built by ``llmctl gateway`` and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable, Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import budgets, keyring, keys, keystore, prices, pricestore

log = structlog.get_logger(__name__)

SYNC_S = 1.0  # spend is written and keys re-read this often
SpendKey = tuple[int, str]  # (key id, period)


def current_periods(now: dt.datetime) -> tuple[str, ...]:
    """The spend rows a budget may read at ``now``: today's, this month's and the lifetime's."""
    return tuple(budgets.period_of(p, now) for p in keys.Period)


class KeyBook:
    """Keys, prices and spend as of the last `sync`, plus the costs counted since."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sessions = sessions
        self._now = now
        self.keyring = keyring.Keyring(())
        self.prices: Mapping[str, prices.Price] = {}
        self._marker: tuple[int, int] | None = None
        self._stored: dict[SpendKey, int] = {}  # read back at the last sync
        self._pending: dict[SpendKey, int] = {}  # counted since, not yet written
        self._writing: dict[SpendKey, int] = {}  # being written by the sync under way
        self._task: asyncio.Task[None] | None = None

    def spent(self, key_id: int, period: str) -> int:
        """What the key spent in ``period`` (pico-USD), this replica's unwritten costs included."""
        spend = (key_id, period)
        return (
            self._stored.get(spend, 0) + self._pending.get(spend, 0) + self._writing.get(spend, 0)
        )

    def charge(self, key_id: int, period: str, picousd: int) -> None:
        """Count a request's cost; written at the next sync."""
        if picousd > 0:
            spend = (key_id, period)
            self._pending[spend] = self._pending.get(spend, 0) + picousd

    async def sync(self) -> None:
        """Write the pending costs and read keys (if they changed), prices and spend back.
        Raises what the database raises; the unwritten costs are then kept for the next."""
        now = self._now()
        batch, self._pending = self._pending, {}
        self._writing = batch
        try:
            async with self._sessions() as session, session.begin():
                if batch:
                    await keystore.add_spend(session, batch, now)
                marker = await keystore.marker(session)
                active = None if marker == self._marker else await keystore.active(session)
                table = await pricestore.table(session)
                stored = await keystore.spending(session, current_periods(now))
        except BaseException:
            for spend, amount in batch.items():
                self._pending[spend] = self._pending.get(spend, 0) + amount
            raise
        finally:
            self._writing = {}
        if active is not None:
            self.keyring, self._marker = keyring.Keyring(active), marker
        self.prices, self._stored = table, stored

    def start(self, interval_s: float = SYNC_S) -> None:
        """Sync every ``interval_s`` in the background until `close`."""
        self._task = asyncio.create_task(self._run(interval_s), name="llmctl-gateway-keybook")

    async def _run(self, interval_s: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception as exc:  # the database is away: keep serving from memory
                if not failing:
                    log.warning("gateway.keys_sync_failed", error=type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("gateway.keys_sync_resumed")
                failing = False

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop syncing and write what is still pending (once, within ``timeout_s``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._pending:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.sync()
        except Exception as exc:
            lost = sum(self._pending.values())
            log.error("gateway.spend_not_written", error=type(exc).__name__, picousd=lost)
