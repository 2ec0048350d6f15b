"""Rate limits shared between gateway replicas over a real NATS server (`gateway.limitfeed`)."""

from __future__ import annotations

import asyncio
import time

import nats

from dwqueue import natsauth
from gateway import limitfeed, ratelimit


async def test_each_replica_sees_the_others_counts_but_never_counts_its_own_twice(
    nats_url: str, nats_prefix: str
) -> None:
    first, second = ratelimit.Limiter(), ratelimit.Limiter()
    feeds = [
        await limitfeed.LimitFeed.open(limiter, nats_url, nats_prefix, natsauth.NatsAuth())
        for limiter in (first, second)
    ]
    try:
        nc = await nats.connect(nats_url)
        await nc.publish(limitfeed.subject(nats_prefix), b"{not json")
        await nc.publish(limitfeed.subject(nats_prefix), b'{"v": 2, "replica": "x"}')
        await nc.close()
        for _ in range(7):
            assert first.admit("7:rpm", 600, time.time()).admitted
        for _ in range(3):
            assert second.admit("7:rpm", 600, time.time()).admitted
        deadline = time.monotonic() + 3
        while second.used("7:rpm", time.time()) != 10 or first.used("7:rpm", time.time()) != 10:
            assert time.monotonic() < deadline, "the replicas never saw each other's counts"
            await asyncio.sleep(0.02)
        await asyncio.sleep(3 * limitfeed.SHARE_S)  # more reports: still replaced, never added
        assert first.used("7:rpm", time.time()) == 10
        assert second.used("7:rpm", time.time()) == 10
    finally:
        for feed in feeds:
            await feed.aclose()


def test_a_report_survives_its_trip_through_json() -> None:
    report = {"7:rpm": {3_500_000_000: 4, 3_500_000_001: 1}, "9:tpm": {3_500_000_000: 812}}
    assert limitfeed.decode(limitfeed.encode("abc", report)) == ("abc", report)
