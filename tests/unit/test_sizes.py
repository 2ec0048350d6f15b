"""Sizes in tables as people read them: decimal units, at most three significant figures."""

from __future__ import annotations

import pytest

from controller import output


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (None, "-"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (4_700_000_000, "4.7 GB"),
        (12_345_678, "12.3 MB"),
        (274_300_000, "274 MB"),
        (99_960, "100 kB"),  # rounds to 100.0: no decimal from 100
        (999_500, "1.0 MB"),  # rounds to 1000 kB: the next unit
        (1_500_000_000_000, "1.5 TB"),
        (12.3e6, "12.3 MB"),  # a rate is a float
    ],
)
def test_a_byte_count_is_shown_in_decimal_units(count: float | None, shown: str) -> None:
    assert output.size(count) == shown
