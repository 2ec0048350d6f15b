"""The snapshot applies declared overrides to what a backend reports."""

from __future__ import annotations

from runtimestate.backends import base
from runtimestate.desired import spec
from runtimestate.reconcile import conditions

REPORTED = base.ObservedModel(
    name="qwen2:0.5b",
    model="qwen2:0.5b",
    context_length=32768,
    capabilities=frozenset({spec.Capability.CHAT, spec.Capability.PROMPT, spec.Capability.STREAM}),
)


def test_reported_facts_pass_through_when_nothing_is_declared() -> None:
    shown = conditions.pulled(REPORTED)
    assert shown.context_length == 32768
    assert (shown.can_chat, shown.can_embed) == (True, False)


def test_a_declared_context_length_and_capabilities_win() -> None:
    declared = spec.ModelSpec("qwen2:0.5b", 8192, (spec.Capability.EMBED,))
    shown = conditions.pulled(REPORTED, declared)
    assert shown.context_length == 8192
    assert (shown.can_chat, shown.can_embed, shown.can_stream) == (False, True, False)


def test_a_declaration_without_overrides_keeps_the_reported_facts() -> None:
    shown = conditions.pulled(REPORTED, spec.ModelSpec("qwen2:0.5b"))
    assert shown.context_length == 32768
    assert shown.can_chat
