"""Per-minute limits across gateway replicas (`gateway.ratelimit`): a sliding window of this
replica's counts plus the counts the others shared, driven with a fake clock."""

from __future__ import annotations

import pytest

from gateway import ratelimit

T0 = 1_780_000_000.37  # seconds since the epoch, off a bucket boundary


def test_requests_are_admitted_up_to_the_limit_then_refused_until_the_window_frees_one() -> None:
    limiter = ratelimit.Limiter(window_s=60, bucket_s=0.5)
    assert [limiter.admit("k:rpm", 3, T0 + i).admitted for i in range(3)] == [True] * 3
    refused = limiter.admit("k:rpm", 3, T0 + 10)
    assert not refused.admitted
    assert refused.used == 3
    # The first request's bucket (T0 falls in [T0 - 0.37, T0 + 0.13)) leaves at T0 - 0.37 + 60.
    assert refused.retry_after_s == pytest.approx(60 - 0.37 - 10)
    assert not limiter.admit("k:rpm", 3, T0 + 59.5).admitted
    assert limiter.admit("k:rpm", 3, T0 + 59.7).admitted
    assert limiter.used("k:rpm", T0 + 59.7) == 3


def test_limits_are_counted_per_limit_id() -> None:
    limiter = ratelimit.Limiter()
    assert limiter.admit("a:rpm", 1, T0).admitted
    assert limiter.admit("b:rpm", 1, T0).admitted
    assert not limiter.admit("a:rpm", 1, T0).admitted


def test_tokens_are_checked_before_a_request_and_counted_after_it() -> None:
    limiter = ratelimit.Limiter()
    assert limiter.check("k:tpm", 1_000, T0).admitted
    limiter.record("k:tpm", T0, 999)
    assert limiter.check("k:tpm", 1_000, T0 + 1).admitted  # one token left: the request may go
    limiter.record("k:tpm", T0 + 1, 500)  # it used more than was left
    refused = limiter.check("k:tpm", 1_000, T0 + 2)
    assert not refused.admitted
    assert refused.used == 1_499
    assert refused.retry_after_s == pytest.approx(60 - 0.37 - 2)


def test_another_replicas_counts_fill_the_same_window() -> None:
    a, b = ratelimit.Limiter(), ratelimit.Limiter()
    for i in range(4):
        assert a.admit("k:rpm", 5, T0 + i).admitted
    b.merge("a", a.report(T0 + 4), T0 + 4)
    assert b.used("k:rpm", T0 + 4) == 4
    assert b.admit("k:rpm", 5, T0 + 4).admitted
    assert not b.admit("k:rpm", 5, T0 + 4).admitted


def test_a_report_replaces_the_last_one_so_repeats_and_losses_count_nothing_twice() -> None:
    a, b = ratelimit.Limiter(), ratelimit.Limiter()
    a.admit("k:rpm", 100, T0)
    b.merge("a", a.report(T0), T0)
    b.merge("a", a.report(T0), T0)
    assert b.used("k:rpm", T0) == 1
    a.admit("k:rpm", 100, T0 + 1)
    a.admit("k:rpm", 100, T0 + 2)  # a report in between was lost
    b.merge("a", a.report(T0 + 2), T0 + 2)
    assert b.used("k:rpm", T0 + 2) == 3


def test_counts_older_than_the_window_are_forgotten_locally_and_remotely() -> None:
    a, b = ratelimit.Limiter(), ratelimit.Limiter()
    a.admit("k:rpm", 10, T0)
    b.merge("a", a.report(T0), T0)
    assert a.report(T0 + 61) == {}
    assert b.used("k:rpm", T0 + 61) == 0


def _drive(*, share: bool, aligned: bool) -> int:
    """Two replicas, 1,200 requests a minute for a minute against a 600/min limit, reports
    sent every 100 ms and delivered 100 ms later; how many were admitted."""
    replicas = {"a": ratelimit.Limiter(), "b": ratelimit.Limiter()}
    in_flight: list[tuple[str, ratelimit.Report]] = []
    admitted = 0
    for tick in range(600):  # 100 ms ticks
        now = T0 + tick * 0.1
        if share:
            for sender, report in in_flight:
                other = "b" if sender == "a" else "a"
                replicas[other].merge(sender, report, now)
            in_flight = [(name, limiter.report(now)) for name, limiter in replicas.items()]
        # Two requests per tick: one at each replica, at the same instant or 50 ms apart.
        admitted += replicas["a"].admit("k:rpm", 600, now).admitted
        admitted += replicas["b"].admit("k:rpm", 600, now if aligned else now + 0.05).admitted
    return admitted


@pytest.mark.parametrize("aligned", [True, False])
def test_two_replicas_sharing_counts_every_100ms_admit_between_600_and_630_of_1200(
    aligned: bool,
) -> None:
    assert 600 <= _drive(share=True, aligned=aligned) <= 630


def test_replicas_that_share_nothing_would_each_admit_the_whole_limit() -> None:
    assert _drive(share=False, aligned=True) == 1_200


def test_a_window_without_a_whole_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one bucket"):
        ratelimit.Limiter(window_s=0.1, bucket_s=0.5)
