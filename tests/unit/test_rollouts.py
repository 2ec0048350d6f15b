"""The pure rolling-upgrade rule: which copies start upgrading, which wait, and why."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from runtimestate.desired import names, updatepolicy
from runtimestate.reconcile import rollouts, steps, upgrades

KEY = names.ModelKey("qwen2:0.5b")
SOURCE = upgrades.Source("ollama", KEY)
OLD, NEW = "a" * 64, "b" * 64
KNOWN = {SOURCE: upgrades.Latest(NEW, dt.datetime(2026, 12, 7, tzinfo=dt.UTC))}
AUTO = {KEY: updatepolicy.Rollout(updatepolicy.UpdatePolicy.AUTO, 1)}


def _copy(backend: str, **changes: object) -> rollouts.Copy:
    copy = rollouts.Copy(backend, "qwen2:0.5b", KEY, "d", SOURCE, OLD, True, False, True)
    return dataclasses.replace(copy, **changes)


def _outcome(actions: list[steps.Action]) -> list[tuple[str, str]]:
    return [(a.backend, a.reason.code.value) for a in actions]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("copies", "policies", "requested", "expected"),
    [
        # auto, maxUnavailable 1: the first copy by name goes, the others wait
        ([_copy("b"), _copy("a")], AUTO, (), [("a", "upgrade"), ("b", "upgrade_waits")]),
        # one copy already upgrading: nothing more starts
        ([_copy("a", upgrading=True), _copy("b")], AUTO, (), [("b", "upgrade_waits")]),
        # a copy not serving is out already: the serving ones wait for it
        ([_copy("a", serving=False, actionable=False), _copy("b")], AUTO, (),
         [("b", "upgrade_waits")]),
        # the latest already: nothing to do
        ([_copy("a", digest=NEW), _copy("b", digest=NEW)], AUTO, (), []),
        # manual and not asked for: reported elsewhere, nothing here
        ([_copy("a"), _copy("b")], {}, (), []),
        # manual, asked for on b only
        ([_copy("a"), _copy("b")], {}, [(KEY, "b")], [("b", "upgrade")]),
        # manual, asked for everywhere
        ([_copy("a"), _copy("b")], {}, [(KEY, "")], [("a", "upgrade"), ("b", "upgrade_waits")]),
        # a restart-type upgrade never takes the last ready copy out
        ([_copy("a", keeps_serving=False)], AUTO, (), [("a", "last_ready_copy")]),
        # ... but an Ollama re-pull keeps serving, so a lone copy is upgraded
        ([_copy("a")], AUTO, (), [("a", "upgrade")]),
    ],
)  # fmt: skip
def test_upgrades_start_within_max_unavailable_and_never_take_the_last_ready_copy(
    copies: list[rollouts.Copy],
    policies: dict[names.ModelKey, updatepolicy.Rollout],
    requested: list[tuple[str, str]],
    expected: list[tuple[str, str]],
) -> None:
    assert _outcome(rollouts.compute(copies, KNOWN, policies, requested)) == expected


def test_max_unavailable_two_upgrades_two_copies_at_once() -> None:
    most = {KEY: updatepolicy.Rollout(updatepolicy.UpdatePolicy.AUTO, 2)}
    found = rollouts.compute([_copy("a"), _copy("b"), _copy("c")], KNOWN, most)
    assert _outcome(found) == [("a", "upgrade"), ("b", "upgrade"), ("c", "upgrade_waits")]
    (held,) = [a for a in found if isinstance(a, steps.ReportDrift)]
    assert held.describe() == (
        "drift on c: qwen2:0.5b upgrade held (2 of maxUnavailable 2 copies out; "
        f"upgrade {OLD[:12]} -> {NEW[:12]} waits)"
    )


def test_a_node_copy_on_new_weights_restarts_its_instance_while_another_copy_is_ready() -> None:
    restart = {"restarts": True, "keeps_serving": False, "weights": "org/m"}
    found = rollouts.compute([_copy("a", **restart), _copy("b", **restart)], KNOWN, AUTO)
    assert [type(a).__name__ for a in found] == ["RestartInstance", "ReportDrift"]
    assert found[0].describe() == (
        f"restart instance qwen2:0.5b on a: upgrade {OLD[:12]} -> {NEW[:12]} (updatePolicy auto)"
    )
