"""Pull progress metering: sums over blobs, a smoothed rate and an ETA."""

from __future__ import annotations

import pytest

from runtimestate.downloads import metering


def test_progress_sums_every_blob_seen_so_far() -> None:
    m = metering.Meter()
    m.update("pulling manifest", None, None, None, 0.0)
    m.update("pulling aaaa", "sha256:a", 0, 1000, 0.0)
    p = m.update("pulling bbbb", "sha256:b", 50, 100, 1.0)
    assert (p.completed, p.total) == (50, 1100)
    p = m.update("pulling aaaa", "sha256:a", 1000, 1000, 2.0)
    assert (p.completed, p.total) == (1050, 1100)
    assert p.status == "pulling aaaa"


def test_rate_and_eta_follow_the_bytes_over_time() -> None:
    m = metering.Meter(smoothing=1.0)
    m.update("pulling aaaa", "sha256:a", 0, 10_000, 0.0)
    p = m.update("pulling aaaa", "sha256:a", 1_000, 10_000, 1.0)
    assert p.rate_bps == pytest.approx(1_000)
    assert p.eta_s == pytest.approx(9.0)


def test_lines_without_sizes_report_no_progress() -> None:
    p = metering.Meter().update("verifying sha256 digest", None, None, None, 0.0)
    assert (p.completed, p.total, p.rate_bps, p.eta_s) == (None, None, None, None)


def test_bursts_closer_than_the_sampling_floor_do_not_spike_the_rate() -> None:
    m = metering.Meter(smoothing=1.0)
    m.update("pulling aaaa", "sha256:a", 0, 10_000, 0.0)
    m.update("pulling aaaa", "sha256:a", 1_000, 10_000, 1.0)
    p = m.update("pulling aaaa", "sha256:a", 5_000, 10_000, 1.001)
    assert p.rate_bps == pytest.approx(1_000)


def test_a_running_total_without_a_digest_counts_as_the_whole_pull() -> None:
    # A node agent's pull reports one total for the whole snapshot, with no blob digest.
    m = metering.Meter(smoothing=1.0)
    m.update("pulling Org/M", None, 0, 300, 0.0)
    p = m.update("pulling Org/M", None, 150, 300, 1.0)
    assert (p.completed, p.total, p.rate_bps, p.eta_s) == (150, 300, 150.0, 1.0)
