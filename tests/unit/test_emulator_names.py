"""Ollama model-name parsing and display in the emulator (PROTOCOLS §1.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulators import names


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:1b", "llama3.2:1b"),
        ("library/llama3.2:1b", "llama3.2:1b"),
        ("registry.ollama.ai/library/qwen2:0.5b", "qwen2:0.5b"),
        ("myns/foo", "myns/foo:latest"),
        ("example.com:5000/ns/foo:v1", "example.com:5000/ns/foo:v1"),
        ("https://registry.ollama.ai/library/qwen2", "qwen2:latest"),
    ],
)
def test_names_display_in_their_shortest_form(text: str, display: str) -> None:
    assert names.parse(text).display == display


@pytest.mark.parametrize("text", ["", "  ", "a/b/c/d", "bad name", "foo@sha256:abc", ":tag", "-x"])
def test_invalid_names_are_rejected(text: str) -> None:
    assert not names.is_valid(text)
    with pytest.raises(names.InvalidNameError):
        names.parse(text)


def test_matching_is_case_insensitive_but_the_parts_keep_their_case() -> None:
    upper = names.parse("Library/QWEN2:0.5B")

    assert upper.key == names.parse("qwen2:0.5b").key
    assert upper.display == "QWEN2:0.5B"


@given(
    model=st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,20}", fullmatch=True),
    tag=st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,10}", fullmatch=True),
)
def test_parsing_a_display_name_gives_the_same_name_back(model: str, tag: str) -> None:
    name = names.parse(f"{model}:{tag}")

    assert names.parse(name.display) == name
