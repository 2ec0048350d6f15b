"""The clock the cycles decide by: the system's, and a fake one that moves only when told."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from runtimestate import clock

START = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_the_system_clock_tells_the_utc_time_and_the_monotonic_time() -> None:
    before = dt.datetime.now(dt.UTC)
    now = clock.SYSTEM.now()
    assert now.utcoffset() == dt.timedelta(0)  # aware (a naive one has None), and UTC
    assert before <= now <= dt.datetime.now(dt.UTC)
    assert abs(clock.SYSTEM.monotonic() - time.monotonic()) < 1.0


def test_a_fake_clock_stands_still_until_advanced_and_then_moves_both_clocks() -> None:
    fake = clock.FakeClock(START)
    assert (fake.now(), fake.monotonic()) == (START, 0.0)
    fake.advance(90.5)
    assert fake.now() == START + dt.timedelta(seconds=90.5)
    assert fake.monotonic() == 90.5


def test_a_fake_clock_starts_at_the_real_time_unless_told_otherwise() -> None:
    before = dt.datetime.now(dt.UTC)
    assert before <= clock.FakeClock().now() <= dt.datetime.now(dt.UTC)


def test_a_fake_clock_refuses_a_naive_start_and_going_back() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.FakeClock(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="does not go back"):
        clock.FakeClock(START).advance(-1)


async def test_a_sleep_on_a_fake_clock_ends_when_the_clock_passes_its_time_not_before() -> None:
    fake = clock.FakeClock(START)
    short = asyncio.create_task(fake.sleep(5))
    long = asyncio.create_task(fake.sleep(60))
    await asyncio.sleep(0.05)  # real time passing moves nothing
    assert (short.done(), long.done(), fake.sleeping) == (False, False, 2)
    fake.advance(4.9)
    await asyncio.sleep(0)
    assert not short.done()
    fake.advance(0.1)
    await asyncio.sleep(0)
    assert (short.done(), long.done(), fake.sleeping) == (True, False, 1)
    fake.advance(100)
    await asyncio.wait_for(long, 1)
    assert fake.sleeping == 0


async def test_a_cancelled_sleep_on_a_fake_clock_is_not_woken_later() -> None:
    fake = clock.FakeClock(START)
    sleeping = asyncio.create_task(fake.sleep(1))
    await asyncio.sleep(0)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    assert fake.sleeping == 0
    fake.advance(2)  # sets no result on the cancelled future (which would raise)
    await asyncio.wait_for(fake.sleep(0), 1)
