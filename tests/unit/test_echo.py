"""Messages repeat what a user gave, cut so that a huge value cannot flood a terminal."""

from __future__ import annotations

import pytest

from runtimestate import echo


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("gpu-1", "'gpu-1'"),
        ("x" * 80, repr("x" * 80)),
        ("x" * 81, repr("x" * 80) + "… (81 characters)"),
        ("y" * 20_971_520, repr("y" * 80) + "… (20971520 characters)"),
        (7, "7"),
        (
            list(range(100)),
            repr(list(range(100)))[:80] + f"… ({len(repr(list(range(100))))} characters)",
        ),
    ],
)
def test_an_echoed_value_is_cut_to_80_characters_with_its_length(value: object, shown: str) -> None:
    assert echo.quoted(value) == shown
