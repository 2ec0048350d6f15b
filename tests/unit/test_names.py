"""Model and backend names: the canonical forms that decide when two names are one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtimestate.desired import names


@pytest.mark.parametrize(
    ("declared", "canonical"),
    [
        ("llama3", "llama3:latest"),
        ("llama3:latest", "llama3:latest"),
        ("Llama3:LATEST", "llama3:latest"),
        ("library/llama3", "llama3:latest"),
        ("registry.ollama.ai/library/llama3:8b", "llama3:8b"),
        ("qwen2:0.5b", "qwen2:0.5b"),
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen/qwen2.5-0.5b-instruct:latest"),
        ("example.com:5000/team/model:v1", "example.com:5000/team/model:v1"),
        ("hf.co/org/name:q4_k_m", "hf.co/org/name:q4_k_m"),
    ],
)
def test_ollama_names_compare_in_their_canonical_form(declared: str, canonical: str) -> None:
    assert names.key(declared, "ollama") == canonical


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("llama 3", "whitespace"),
        ("llama3\n", "whitespace"),
        ("-llama", "invalid model"),
        ("llama3:", "invalid tag"),
        ("llama3:-x", "invalid tag"),
        ("a/b/c/d", "more than"),
        ("name.space/model", "invalid namespace"),
        ("model@sha", "invalid model"),
        ("x" * 81, "invalid model"),
    ],
)
def test_invalid_ollama_names_are_refused_with_the_bad_part(name: str, problem: str) -> None:
    with pytest.raises(names.InvalidName, match=problem):
        names.parse_ollama(name)


def test_vllm_names_are_matched_exactly() -> None:
    assert names.key("Qwen/Qwen2.5", "vllm") == "Qwen/Qwen2.5"
    assert names.key("Qwen/Qwen2.5", "ollama") == "qwen/qwen2.5:latest"


@pytest.mark.parametrize("name", ["gpu-1", "a", "0", "a" * 63, "node-07-eu"])
def test_dns_labels_are_accepted(name: str) -> None:
    assert names.check_dns_label(name, "backend") == name


@pytest.mark.parametrize("name", ["GPU-1", "-gpu", "gpu-", "gpu_1", "gpu.1", "a" * 64, "", "g pu"])
def test_names_that_are_not_dns_labels_are_refused(name: str) -> None:
    with pytest.raises(names.InvalidName, match="not a DNS label"):
        names.check_dns_label(name, "backend")


_part = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True)


@given(model=_part, tag=st.one_of(st.none(), _part), namespace=st.one_of(st.none(), _part))
def test_canonical_form_is_idempotent_and_fills_defaults(
    model: str, tag: str | None, namespace: str | None
) -> None:
    name = (f"{namespace}/" if namespace else "") + model + (f":{tag}" if tag else "")
    once = names.key(name, "ollama")
    assert names.key(once, "ollama") == once
    assert once.endswith(f":{tag or 'latest'}")
    assert names.key(name.upper(), "ollama") == once
