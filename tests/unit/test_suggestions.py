"""Did you mean: which stored names are one edit away from a name that was not found."""

from __future__ import annotations

import pytest

from runtimestate.desired import names, suggestions


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("gpu-l", "gpu-1"),  # substituted
        ("gpu1", "gpu-1"),  # deleted
        ("gpu--1", "gpu-1"),  # inserted
        ("gpu-12", "gpu-1"),  # inserted at the end
        ("pgu-1", "gpu-1"),  # adjacent characters swapped
        ("xgpu-1", "gpu-1"),  # inserted at the start
    ],
)
def test_a_name_one_edit_away_is_close(typed: str, stored: str) -> None:
    assert suggestions.one_edit_apart(typed, stored)
    assert suggestions.one_edit_apart(stored, typed)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("gpu-1", "gpu-1"),  # the same name is not a suggestion
        ("gpu-l2", "gpu-1"),  # two edits
        ("ugp-1", "gpu-1"),  # a swap of characters that are not adjacent
        ("1-upg", "gpu-1"),
        ("gpu", "gpu-1"),
        ("", "ab"),
    ],
)
def test_a_name_two_or_more_edits_away_is_not_close(typed: str, stored: str) -> None:
    assert not suggestions.one_edit_apart(typed, stored)


def test_every_close_name_is_suggested_sorted_and_once() -> None:
    stored = ["gpu-2", "cpu-1", "gpu-1", "gpu-1", "gpu-10", "edge"]
    assert suggestions.close("gpu-0", stored) == ("gpu-1", "gpu-10", "gpu-2")


def test_model_names_are_compared_by_their_canonical_form() -> None:
    def key(name: str) -> str:
        return names.key(name, "ollama")

    stored = ["llama3:latest", "Qwen2:0.5b", "mistral"]
    assert suggestions.close("Llama2", stored, key) == ("llama3:latest",)
    assert suggestions.close("qwen2:0.6b", stored, key) == ("Qwen2:0.5b",)


@pytest.mark.parametrize(
    ("found", "text"),
    [
        (["gpu-1"], "did you mean 'gpu-1'?"),
        (["gpu-1", "gpu-2"], "did you mean 'gpu-1' or 'gpu-2'?"),
        (["a", "b", "c"], "did you mean 'a', 'b' or 'c'?"),
        (
            ["a", "b", "c", "d", "e", "f", "g"],
            "did you mean 'a', 'b', 'c', 'd', 'e' or one of 2 more?",
        ),
    ],
)
def test_the_suggestion_lists_the_close_names(found: list[str], text: str) -> None:
    assert suggestions.phrase(found) == text
