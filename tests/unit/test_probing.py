"""Probe bookkeeping: backoff, grace period and phases, with an injected clock."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given
from hypothesis import strategies as st

from runtimestate import snapshot
from runtimestate.reconcile import probing

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
POLICY = probing.Policy(
    grace=dt.timedelta(seconds=60),
    base_delay=dt.timedelta(seconds=5),
    max_delay=dt.timedelta(seconds=80),
)


def _fail(record: probing.Record[str], at: dt.datetime, seed: int = 1) -> probing.Record[str]:
    return probing.failed(record, "boom", "timeout", at, POLICY, random.Random(seed))


def test_a_backend_never_probed_is_unknown_and_due() -> None:
    record: probing.Record[str] = probing.Record()
    assert record.phase(T0, POLICY) is snapshot.Phase.UNKNOWN
    assert record.due(T0)


def test_a_failing_backend_keeps_its_last_good_list_as_degraded_then_unreachable() -> None:
    ok = probing.succeeded(probing.Record[str](), "models-v1", T0)
    assert ok.phase(T0, POLICY) is snapshot.Phase.READY
    failing = _fail(ok, T0 + dt.timedelta(seconds=10))
    assert failing.phase(T0 + dt.timedelta(seconds=20), POLICY) is snapshot.Phase.DEGRADED
    assert failing.usable(T0 + dt.timedelta(seconds=20), POLICY) == "models-v1"
    later = T0 + dt.timedelta(seconds=71)
    assert failing.phase(later, POLICY) is snapshot.Phase.UNREACHABLE
    assert failing.usable(later, POLICY) is None


def test_a_backend_that_never_answered_is_unreachable_at_once() -> None:
    failing = _fail(probing.Record[str](), T0)
    assert failing.phase(T0, POLICY) is snapshot.Phase.UNREACHABLE
    assert failing.usable(T0, POLICY) is None


def test_backoff_grows_is_capped_and_only_a_success_resets_it() -> None:
    record: probing.Record[str] = probing.Record()
    delays = []
    now = T0
    for _ in range(8):
        record = _fail(record, now)
        assert record.next_probe_at is not None
        delays.append(record.next_probe_at - now)
        assert not record.due(now)
        now = record.next_probe_at
        assert record.due(now)
    assert delays[1] > delays[0]
    assert max(delays) <= POLICY.max_delay
    assert record.first_failure_at == T0
    reset = probing.succeeded(record, "back", now)
    assert (reset.failures, reset.next_probe_at, reset.first_failure_at) == (0, None, None)


@given(failures=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_every_delay_lies_between_half_and_all_of_its_ceiling(failures: int, seed: int) -> None:
    record = probing.Record[str](failures=failures - 1)
    after = probing.failed(record, "x", "timeout", T0, POLICY, random.Random(seed))
    assert after.next_probe_at is not None
    delay = after.next_probe_at - T0
    ceiling = min(POLICY.max_delay, POLICY.base_delay * 2 ** min(failures - 1, 20))
    assert ceiling / 2 <= delay <= ceiling
