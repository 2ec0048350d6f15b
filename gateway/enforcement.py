"""Keys enforced by a running gateway, assembled: the key book, the limiter and its NATS feed.

`enforce` reads the key store once (raising what the database raises, so that ``llmctl gateway``
exits 1 when it cannot), then keeps it in step in the background (`keybook.KeyBook`), shares
rate limits over NATS when a URL is given (`limitfeed.LimitFeed`; without one each replica
limits alone) and returns the `Enforcement` whose ``gate`` is both the application's
`access.Keys` and its accounting `exchange.Observer`. `Enforcement.aclose` writes the last
spend and closes everything. Called by ``llmctl gateway`` and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dwqueue import natsauth
from gateway import keybook, keygate, limitfeed, ratelimit
from runtimestate import database, desired

PRUNE_S = 1.0


@dataclasses.dataclass
class Enforcement:
    """What enforces keys; close it after the application stopped serving."""

    gate: keygate.KeyGate
    feed: limitfeed.LimitFeed | None
    engine: AsyncEngine
    pruner: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        try:
            if self.pruner is not None:
                self.pruner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.pruner
            await self.gate.book.close()
            if self.feed is not None:
                await self.feed.aclose()
        finally:
            await self.engine.dispose()


async def _prune(limiter: ratelimit.Limiter) -> None:
    """Without a feed (whose reports prune as they go), drop the counts that left the window."""
    while True:
        await asyncio.sleep(PRUNE_S)
        limiter.report(time.time())


async def enforce(
    database_url: str,
    state: Callable[[], desired.DesiredState | None],
    *,
    nats_url: str | None = None,
    prefix: str = "llmctl",
    nats_auth: natsauth.NatsAuth | None = None,
    sync_s: float = keybook.SYNC_S,
) -> Enforcement:
    """Keys read, kept current every ``sync_s`` and limits shared; raises when the database
    or NATS cannot be used."""
    engine = database.create_async_engine(database_url)
    feed = None
    try:
        book = keybook.KeyBook(database.session_factory(engine))
        await book.sync()
        limiter = ratelimit.Limiter()
        if nats_url is not None:
            auth = nats_auth if nats_auth is not None else natsauth.NatsAuth()
            feed = await limitfeed.LimitFeed.open(limiter, nats_url, prefix, auth)
    except BaseException:
        await engine.dispose()
        raise
    book.start(sync_s)
    pruner = None if feed is not None else asyncio.create_task(_prune(limiter))
    return Enforcement(keygate.KeyGate(book, limiter, state), feed, engine, pruner)
