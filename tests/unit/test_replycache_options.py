"""Sizes and seconds as ``llmctl gateway --cache-*`` reads them (`controller.replycacheoptions`)."""

from __future__ import annotations

import pytest

from controller import replycacheoptions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65536", 65536),
        ("64MiB", 64 * 1024 * 1024),
        ("1.5 KB", 1500),
        ("2kib", 2048),
        ("1G", 1_000_000_000),
        ("10b", 10),
        ("", None),
        ("-1", None),
        ("12XB", None),
        ("1e6", None),
        ("MiB", None),
    ],
)
def test_a_size_is_bytes_or_a_number_with_a_decimal_or_binary_unit(
    text: str, expected: int | None
) -> None:
    assert replycacheoptions.size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("300", 300.0), ("0", 0.0), ("0.25", 0.25), ("-1", None), ("inf", None), ("5m", None)],
)
def test_seconds_are_a_finite_non_negative_number(text: str, expected: float | None) -> None:
    assert replycacheoptions.seconds(text) == expected
