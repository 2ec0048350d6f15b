"""One model key: every comparison of two model names goes through `names.key`.

A backend may report a name Ollama's grammar rejects (a fourth path part, a digest); the
planner, the status document, the metrics and the resolver must then all agree that it is
its own key, matching no declared model, instead of one of them raising.
"""

from __future__ import annotations

import datetime as dt

import pytest

from controller import metrics
from runtimestate import snapshot
from runtimestate.desired import names, spec
from runtimestate.resolver import candidates

OFF_GRAMMAR = "hub.example/team/sub/model:q4"  # four path parts: not an Ollama reference


def _state(kind: str, declared: tuple[str, ...], served: tuple[str, ...]) -> snapshot.LLMState:
    return snapshot.LLMState(
        id=1,
        name="gpu-1",
        type=kind,
        base_url="http://gpu-1:11434",
        models=declared,
        pulled_models=tuple(snapshot.PulledModel(n, n, can_chat=True) for n in served),
        phase=snapshot.Phase.READY,
        last_ok_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def test_metrics_count_a_backend_serving_a_name_outside_ollamas_grammar() -> None:
    taken = snapshot.Snapshot({"gpu-1": _state("ollama", ("Llama3",), (OFF_GRAMMAR, "llama3"))})
    assert metrics.pairs(taken) == (1, 1)


def test_metrics_do_not_count_an_off_grammar_name_as_a_declared_one() -> None:
    taken = snapshot.Snapshot({"gpu-1": _state("ollama", ("llama3",), (OFF_GRAMMAR,))})
    assert metrics.pairs(taken) == (1, 0)


def test_the_resolver_finds_an_off_grammar_name_exactly_as_served() -> None:
    taken = snapshot.Snapshot({"gpu-1": _state("ollama", (), (OFF_GRAMMAR,))})
    index = candidates.Index(taken, candidates.candidates_of)
    assert [c.model for c in index.group(OFF_GRAMMAR)] == [OFF_GRAMMAR]
    assert index.group(OFF_GRAMMAR.upper()) == ()


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("Llama3", spec.BackendType.OLLAMA, "llama3:latest"),
        ("library/llama3:latest", spec.BackendType.OLLAMA, "llama3:latest"),
        (OFF_GRAMMAR, spec.BackendType.OLLAMA, OFF_GRAMMAR),
        ("Qwen/Qwen2.5", spec.BackendType.VLLM, "Qwen/Qwen2.5"),
        ("gpt-4o", spec.BackendType.OPENAI, "gpt-4o"),
        ("Llama3", "ollama", "llama3:latest"),  # a snapshot stores the type as its value
    ],
)
def test_a_model_key_depends_on_the_backend_type_only_for_ollama(
    name: str, kind: str, expected: str
) -> None:
    assert names.key(name, kind) == expected
