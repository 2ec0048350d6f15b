"""Byte progress of a weights pull: monotonic, clamped to the total, from the client's bars."""

from __future__ import annotations

from nodeagent import progress


def _meter(cached: int, total: int) -> tuple[progress.Meter, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []
    meter = progress.Meter(cached, total, lambda p: seen.append((p.completed, p.total)))
    return meter, seen


def test_progress_starts_at_the_cached_bytes_and_ends_at_the_total() -> None:
    meter, seen = _meter(cached=30, total=100)

    meter.start()
    meter.add(50)
    meter.finish()

    assert seen == [(30, 100), (80, 100), (100, 100)]


def test_a_restarted_file_never_makes_progress_go_back_or_repeat() -> None:
    meter, seen = _meter(cached=0, total=100)

    meter.add(40)
    meter.add(-40)  # the client truncated the file and starts it again
    meter.add(40)
    meter.add(30)

    assert seen == [(40, 100), (70, 100)]


def test_progress_never_passes_the_total() -> None:
    meter, seen = _meter(cached=90, total=100)

    meter.add(50)
    meter.finish()

    assert seen == [(100, 100)]


def test_only_the_clients_bytes_bar_feeds_the_meter() -> None:
    meter, seen = _meter(cached=0, total=100)
    bar_class = meter.bar_class()

    files = bar_class(desc="Fetching 2 files", total=2)
    transfer = bar_class(desc="Downloading bytes", total=0)
    written = bar_class(desc="Reconstructing (incomplete total...)", total=0)
    files.update(1)
    transfer.update(10)
    written.update(25)

    assert seen == [(25, 100)]
