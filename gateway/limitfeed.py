"""Rate limits shared between gateway replicas over NATS: each replica's counts, every 100 ms.

Every replica publishes its `ratelimit.Limiter.report` on ``<prefix>.v1.gateway.limits`` every
`SHARE_S` and merges the reports of the others (its own are told apart by a random replica id
and ignored). The payload is JSON: ``{"v": 1, "replica": "<hex>", "limits": {"<key id>:rpm":
{"<bucket>": <count>, ...}, ...}}``, a replica's whole window (buckets are numbered alike on
every replica: seconds since the epoch over the bucket length), so a lost message costs
nothing once the next arrives. When NATS is away, reports are neither sent nor received and
each replica limits with what it counted itself (and the others' last reports, until they
age out of the window). Connects with the gateway's `dwqueue.natsauth.NatsAuth`, as the
resolver's mirror does. Called by ``llmctl gateway`` and tests; logs no payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import nats.aio.msg
import nats.errors
import structlog

from dwqueue import connector, flushing, natsauth
from gateway import ratelimit

log = structlog.get_logger(__name__)

SHARE_S = 0.1
VERSION = 1
_CONNECT_TIMEOUT_S = 5.0


def subject(prefix: str) -> str:
    """The subject reports travel on."""
    return f"{prefix}.v1.gateway.limits"


def encode(replica: str, report: ratelimit.Report) -> bytes:
    """A report as it goes on the wire."""
    limits = {lid: {str(b): n for b, n in counts.items()} for lid, counts in report.items()}
    return json.dumps({"v": VERSION, "replica": replica, "limits": limits}).encode()


def decode(data: bytes) -> tuple[str, dict[str, dict[int, int]]]:
    """The replica and report of a message; ValueError for anything else."""
    document: Any = json.loads(data)
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise ValueError("not a version 1 limits report")
    replica, limits = document.get("replica"), document.get("limits")
    if not isinstance(replica, str) or not isinstance(limits, dict):
        raise ValueError("a report needs a replica and its limits")
    report = {
        str(lid): {int(b): int(n) for b, n in counts.items()} for lid, counts in limits.items()
    }
    return replica, report


class LimitFeed:
    """Publishes this replica's counts and merges the others' into ``limiter``."""

    def __init__(
        self, limiter: ratelimit.Limiter, prefix: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.limiter = limiter
        self.replica = secrets.token_hex(8)
        self._subject = subject(prefix)
        self._clock = clock
        self._nc = connector.GuardedClient()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, limiter: ratelimit.Limiter, url: str, prefix: str, auth: natsauth.NatsAuth
    ) -> LimitFeed:
        """Connected, subscribed and sharing; raises as `connector.dial` does."""
        feed = cls(limiter, prefix)
        await connector.dial(
            feed._nc, url, auth, timeout_s=_CONNECT_TIMEOUT_S, name="llmctl-gateway-limits",
            max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
        )  # fmt: skip
        try:
            await feed._nc.subscribe(feed._subject, cb=feed._on_message)
            await flushing.flush(feed._nc, _CONNECT_TIMEOUT_S)
        except BaseException:
            await feed.aclose()
            raise
        feed._task = asyncio.create_task(feed._share(), name="llmctl-gateway-limits")
        return feed

    async def _on_message(self, msg: nats.aio.msg.Msg) -> None:
        try:
            replica, report = decode(msg.data)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("gateway.bad_limits_report", error=str(exc)[:200])
            return
        if replica != self.replica:
            self.limiter.merge(replica, report, self._clock())

    async def _share(self) -> None:
        while True:
            await asyncio.sleep(SHARE_S)
            report = self.limiter.report(self._clock())
            if not self._nc.is_connected:
                continue  # NATS is away: this replica limits alone meanwhile
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.publish(self._subject, encode(self.replica, report))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(nats.errors.Error, OSError, AssertionError):
            await asyncio.wait_for(self._nc.close(), 2.0)
