"""Rolling upgrades (issue 19): which copies of a model to upgrade this cycle, and which wait.

`compute` takes every `Copy` (a backend holding a declared model, with the digest it holds,
whether it serves, whether an upgrade of it is under way and whether it keeps serving while
upgrading), what upstream has (`upgrades.Latest` by `upgrades.Source`), each model's
`updatepolicy.Rollout` and the upgrades asked for by hand. For each model whose policy is
``auto``, or whose copy was asked for (``llmctl model upgrade``), a copy older than upstream's
is upgraded by a `steps.Pull` (reason ``upgrade``: an Ollama re-pull, a node agent's
re-download; both leave the old copy serving) or, for a node agent whose weights are new but
whose instance still runs the old snapshot, a `steps.RestartInstance` (which stops it), when:

- fewer than ``maxUnavailable`` copies of the model are out: upgrading now, or not serving
  (whatever the cause: a backend down counts, as Kubernetes counts an unavailable pod); and
- it is not the last ready copy, unless the copy keeps serving while it upgrades (Ollama keeps
  the old copy listed and usable until the new manifest is written, PROTOCOLS 1.4, so a re-pull
  takes nothing out of service, nor does a node agent's re-download; its restart does).

Otherwise it waits as a `steps.ReportDrift` of kind ``upgrade_held`` saying why
(``upgrade_waits`` or ``last_ready_copy``); ``reconcile --dry-run`` prints both. Copies are
taken in backend-name order, so every replica picks the same ones. ``manual`` models not asked
for get nothing here (``UpdateAvailable`` reports them). Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping

from runtimestate.desired import engineargs, names, updatepolicy
from runtimestate.reconcile import steps, upgrades

ALL_BACKENDS = ""  # a request naming no backend: every copy of the model
_SHORT = 12


@dataclasses.dataclass(frozen=True, slots=True)
class Copy:
    """``model`` (as declared, with its comparison key and declaration) held on ``backend``."""

    backend: str
    model: str
    model_key: names.ModelKey
    declaration: str
    source: upgrades.Source
    digest: str
    serving: bool  # a request can be sent to it now
    upgrading: bool  # a download of it is under way on this backend
    keeps_serving: bool  # its upgrade leaves it serving (an Ollama re-pull)
    actionable: bool = True  # observed fresh where llmctl can pull: else only counted
    # A node agent whose weights are upstream's but whose instance runs an older snapshot: the
    # upgrade is a restart of that instance (from `weights`, with the declared `vllm`).
    restarts: bool = False
    weights: str = ""
    vllm: engineargs.VllmArgs | None = None


def compute(
    copies: Iterable[Copy],
    known: Mapping[upgrades.Source, upgrades.Latest],
    rollouts: Mapping[names.ModelKey, updatepolicy.Rollout],
    requested: Collection[tuple[str, str]] = (),
) -> list[steps.Action]:
    """The upgrades to start and those held, over every model. ``requested`` holds (model
    key, backend) pairs asked for by hand, backend `ALL_BACKENDS` for every copy."""
    by_model: dict[names.ModelKey, list[Copy]] = defaultdict(list)
    for copy in copies:
        by_model[copy.model_key].append(copy)
    actions: list[steps.Action] = []
    for key in sorted(by_model):
        found = sorted(by_model[key], key=lambda c: c.backend)
        latest = known.get(found[0].source)
        if latest is not None:
            rollout = rollouts.get(key, updatepolicy.DEFAULT)
            actions += _model(found, latest, rollout, requested)
    return actions


def _model(
    found: list[Copy],
    latest: upgrades.Latest,
    rollout: updatepolicy.Rollout,
    requested: Collection[tuple[str, str]],
) -> list[steps.Action]:
    auto = rollout.policy is updatepolicy.UpdatePolicy.AUTO
    out = sum(c.upgrading or not c.serving for c in found)
    ready = sum(c.serving and not c.upgrading for c in found)
    actions: list[steps.Action] = []
    for copy in found:
        asked = {(copy.model_key, copy.backend), (copy.model_key, ALL_BACKENDS)}
        wanted = auto or bool(asked & set(requested))
        if copy.digest == latest.digest or copy.upgrading or not wanted or not copy.actionable:
            continue
        why = "updatePolicy auto" if auto else "asked for by llmctl model upgrade"
        change = f"{copy.digest[:_SHORT]} -> {latest.digest[:_SHORT]}"
        held = _held(copy, out, ready, rollout.max_unavailable)
        if held is not None:
            text = f"{held.text}; upgrade {change} waits"
            reason = steps.Reason(held.code, text)
            actions.append(steps.ReportDrift(copy.backend, _HELD, copy.model, reason))
            continue
        reason = steps.Reason(steps.ReasonCode.UPGRADE, f"upgrade {change} ({why})")
        actions.append(_upgrade(copy, reason))
        out += copy.serving  # a copy that was not serving was counted out already
        ready -= 0 if copy.keeps_serving or not copy.serving else 1
    return actions


_HELD = steps.DriftKind.UPGRADE_HELD


def _upgrade(copy: Copy, reason: steps.Reason) -> steps.Action:
    """A re-pull (Ollama; a node agent's weights), or the restart onto new weights."""
    if copy.restarts:
        return steps.RestartInstance(copy.backend, copy.model, copy.weights, copy.vllm, reason)
    return steps.Pull(copy.backend, copy.model, copy.model_key, copy.declaration, reason)


def _held(copy: Copy, out: int, ready: int, most: int) -> steps.Reason | None:
    """Why ``copy`` may not start upgrading now, or None."""
    taken = out + (1 if copy.serving else 0)  # what is out once this one is
    if taken > most and copy.serving:
        text = f"{out} of maxUnavailable {most} copies out"
        return steps.Reason(steps.ReasonCode.UPGRADE_WAITS, text)
    if copy.serving and not copy.keeps_serving and ready <= 1:
        text = "the last ready copy: another copy must be ready first"
        return steps.Reason(steps.ReasonCode.LAST_READY_COPY, text)
    return None
