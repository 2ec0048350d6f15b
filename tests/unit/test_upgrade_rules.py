"""The pure upgrade rules: which backends hold an older copy than upstream, and the condition."""

from __future__ import annotations

import datetime as dt

import pytest

from runtimestate import snapshot
from runtimestate.reconcile import upgrades

SINCE = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
OLD, NEW = "a" * 64, "b" * 64
COMMIT_OLD, COMMIT_NEW = "1" * 40, "2" * 40


def _state(
    kind: str, declared: tuple[str, ...], held: dict[str, str], name: str = "b1"
) -> snapshot.LLMState:
    models = tuple(snapshot.PulledModel(n, n, digest=d) for n, d in held.items())
    return snapshot.LLMState(1, name, kind, "http://x", declared, models, snapshot.Phase.READY)


KNOWN = {
    upgrades.Source("ollama", "qwen2:0.5b"): upgrades.Latest(NEW, SINCE),
    upgrades.Source("hub", "org/tiny"): upgrades.Latest(COMMIT_NEW, SINCE),
}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_state("ollama", ("qwen2:0.5b",), {"qwen2:0.5b": OLD}), [("qwen2:0.5b", OLD, NEW)]),
        (_state("ollama", ("Qwen2:0.5b",), {"qwen2:0.5b": OLD}), [("qwen2:0.5b", OLD, NEW)]),
        (_state("ollama", ("qwen2:0.5b",), {"qwen2:0.5b": NEW}), []),  # already the latest
        (_state("ollama", (), {"qwen2:0.5b": OLD}), []),  # not declared here
        (_state("ollama", ("llama3",), {"llama3:latest": OLD}), []),  # nothing known upstream
        (_state("vllm", ("qwen2:0.5b",), {"qwen2:0.5b": OLD}), []),  # nothing to upgrade
        (_state("node", ("org/tiny",), {"org/tiny": COMMIT_OLD}),
         [("org/tiny", COMMIT_OLD, COMMIT_NEW)]),
    ],
)  # fmt: skip
def test_an_upgrade_is_available_where_a_declared_model_is_held_at_an_older_digest(
    state: snapshot.LLMState, expected: list[tuple[str, str, str]]
) -> None:
    found = upgrades.available(state, KNOWN)
    assert [(u.model, u.current, u.latest) for u in found] == expected


def test_only_states_holding_an_old_copy_are_marked_with_update_available() -> None:
    old = _state("ollama", ("qwen2:0.5b",), {"qwen2:0.5b": OLD}, "old")
    new = _state("ollama", ("qwen2:0.5b",), {"qwen2:0.5b": NEW}, "new")
    marked = upgrades.marked({"old": old, "new": new}, KNOWN)
    assert marked["new"] is new
    condition = marked["old"].condition("UpdateAvailable")
    assert condition == snapshot.Condition(
        "UpdateAvailable", True, "update_available",
        f"qwen2:0.5b: {OLD[:12]} -> {NEW[:12]} since 2026-12-07T10:00:00Z",
    )  # fmt: skip
    assert upgrades.wanted([old, new]) == {upgrades.Source("ollama", "qwen2:0.5b")}
