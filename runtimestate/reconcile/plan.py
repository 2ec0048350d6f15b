# Over 400 lines: the model rules, the cross-backend pass and decision reuse are one concept.
"""The planner: what one backend cycle should do, as actions that each carry a reason.

`compute` takes per-backend views (desired models, observed models, policy, capabilities; see
`runtimestate.reconcile.planview`), the active and held download jobs, the record of what llmctl
pulled, and whether the desired state was read completely. It returns a `Plan`: pulls, job
cancellations, prunes, a node agent's instance starts, restarts and stops (their rules are
`runtimestate.reconcile.instances`), LoRA adapter loads and unloads on vLLM
(`runtimestate.reconcile.loras`), and informative entries (drift, held downloads). The
backend cycle applies the mutating ones; `llmctl reconcile --dry-run` prints `Plan.describe()`.

Pure and deterministic: no database, HTTP, NATS or clock, and the same inputs in any order give
the same plan. Must not import the adapters (`runtimestate.backends` imports httpx).

Each backend's share of the plan depends only on its view, its jobs, what llmctl pulled onto
it and whether the desired state was read completely; `Plan.decisions` keeps it with those
inputs. Given the previous cycle's plan, `compute` reuses a backend's decision when its view is
the same object and the rest compares equal, so a steady fleet is planned in O(backends), not
O(backends x models). The result is the same as without `previous`. One rule spans backends:
instance restarts roll one at a time per model (`instances.roll`, a pass over the decisions
that leaves them reusable).

Rules (DESIGN.md section 5), all comparing names in the backend type's canonical form:
- A declared model that is not observed is pulled where the backend can pull, unless a job for
  it is active or a finished job holds it at the current declaration (cancelled, or failed with
  a non-retryable class); elsewhere it is reported as drift.
- A pull whose size is known and does not fit the backend's free disk is held as drift with
  the numbers (`runtimestate.reconcile.admission`, issue 16).
- Nothing is pulled or pruned on a stale or missing observation.
- A backend in no pool is observed only (DESIGN section 3): nothing is pulled onto it or pruned
  from it, whatever its policy. This is not an empty desired set: a backend whose pools declare
  no model has one, and `prune: all` empties it as DESIGN section 5 says.
- An observed model that is not declared is pruned only if the backend can delete, is in a
  pool, the policy is not `none`, the desired state was read completely, the backend's desired
  set is not empty (unless the policy is `all`), llmctl pulled it (unless the policy is `all`),
  it is not loaded (or its instance is stopped in the same plan) and no job for it is active.
  Otherwise it is reported as drift, with the reason it was kept (not on cloud providers,
  whose catalogues are not drift).
- With the desired state read completely, an active job is cancelled when its backend is gone,
  is in no pool, cannot pull, or no longer wants the model. Read incompletely, the planner acts
  only on what is declared (pulls), never on what seems absent (no prune, no cancel, no
  undeclared drift).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TypeVar, assert_never

from dwqueue import jobs as dwjobs  # `jobs` is compute's parameter
from runtimestate.desired import names, spec
from runtimestate.reconcile import (  # instances imports this module back
    admission,
    instances,
    loras,
    planview,
    steps,
    warmth,
)

_A = TypeVar("_A", bound="steps.Action")

# Catalogues of cloud providers list hundreds of models nobody declares; not drift.
_REPORTS_UNDECLARED = frozenset(
    {spec.BackendType.OLLAMA, spec.BackendType.VLLM, spec.BackendType.NODE}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """One declared backend's actions and the inputs they were decided from."""

    view: planview.BackendView
    jobs: tuple[planview.JobView, ...]
    managed: frozenset[str]
    desired_complete: bool
    actions: tuple[steps.Action, ...]
    lora: planview.LoraRecord = planview.NO_LORAS

    def holds_for(
        self,
        view: planview.BackendView,
        jobs: tuple[planview.JobView, ...],
        managed: frozenset[str],
        desired_complete: bool,
        lora: planview.LoraRecord = planview.NO_LORAS,
    ) -> bool:
        """Whether these inputs are the ones decided on (the view by identity)."""
        return (
            self.view is view
            and self.desired_complete == desired_complete
            and self.managed == managed
            and self.jobs == jobs
            and self.lora == lora
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Actions sorted by backend, then kind (cancel, prune, pull, hold, drift), then model.

    `decisions` holds each declared backend's share (empty for a plan built by hand); it is
    what `compute` may reuse next time and takes no part in comparing plans. `rolled` holds
    the shares the fleet-wide restart rule changed (`instances.roll`).
    """

    actions: tuple[steps.Action, ...] = ()
    decisions: Mapping[str, Decision] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    rolled: Mapping[str, tuple[steps.Action, ...]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def mutating(self) -> tuple[steps.Action, ...]:
        return tuple(a for a in self.actions if isinstance(a, steps.MUTATING))

    def of(self, kind: type[_A]) -> tuple[_A, ...]:
        return tuple(a for a in self.actions if isinstance(a, kind))

    def for_backend(self, name: str) -> Plan:
        if name in self.rolled:
            return Plan(self.rolled[name])
        decision = self.decisions.get(name)
        if decision is not None:
            return Plan(decision.actions)
        return Plan(tuple(a for a in self.actions if a.backend == name))

    def describe(self) -> list[str]:
        """One human line per action, in plan order."""
        return [action.describe() for action in self.actions]


@dataclasses.dataclass(frozen=True)
class Facts:
    """One backend's inputs, indexed by comparison key (also what `instances.decide` reads)."""

    view: planview.BackendView
    desired: Mapping[names.ModelKey, planview.DesiredModel]
    active: frozenset[names.ModelKey]
    finished: Mapping[names.ModelKey, tuple[planview.JobView, ...]]
    managed: frozenset[names.ModelKey]
    desired_complete: bool

    @property
    def fresh(self) -> bool:
        return self.view.observed is not None and not self.view.observed.stale


def compute(
    backends: Iterable[planview.BackendView],
    *,
    jobs: Iterable[planview.JobView] = (),
    managed: Iterable[tuple[str, str]] = (),
    desired_complete: bool = True,
    previous: Plan | None = None,
    lora: Mapping[str, planview.LoraRecord] | None = None,
) -> Plan:
    """The plan for one cycle. Pure, deterministic and independent of input order.

    ``backends`` are the declared backends; ``jobs`` the active download jobs plus the latest
    finished one per (backend, model) (a job whose backend is not in ``backends`` belongs to a
    deleted backend); ``managed`` the (backend, model) pairs llmctl pulled; ``desired_complete``
    False when the desired state could not be read completely; ``previous`` the last plan,
    whose decisions are reused where their inputs did not change (see the module docstring);
    ``lora`` per backend, the adapters llmctl loaded and the refused loads held (`loras`).
    Raises `ValueError` when two views share a name.
    """
    given = tuple(backends)
    views = {view.name: view for view in given}
    if len(views) != len(given):
        raise ValueError("two backend views share a name")
    jobs_by_backend: dict[str, list[planview.JobView]] = defaultdict(list)
    for job in jobs:
        jobs_by_backend[job.backend].append(job)
    managed_by_backend: dict[str, set[str]] = defaultdict(set)
    for backend, model in managed:
        managed_by_backend[backend].add(model)
    earlier = previous.decisions if previous is not None else {}
    decisions: dict[str, Decision] = {}
    for name in sorted(views):
        backend_jobs = tuple(sorted(jobs_by_backend.get(name, ()), key=lambda j: j.job_id))
        backend_managed = frozenset(managed_by_backend.get(name, ()))
        record = (lora or {}).get(name, planview.NO_LORAS)
        old = earlier.get(name)
        if old is not None and old.holds_for(
            views[name], backend_jobs, backend_managed, desired_complete, record
        ):
            decisions[name] = old
        else:
            decisions[name] = _decide(
                views[name], backend_jobs, backend_managed, desired_complete, record
            )
    # Jobs of backends that are no longer declared are cancelled; no decision holds them.
    orphans: list[steps.Action] = []
    if desired_complete:
        for owner in jobs_by_backend.keys() - views.keys():
            orphans += _cancellations(None, jobs_by_backend[owner])
    # Each decision is sorted and `order` sorts by backend first: concatenating decisions in
    # name order, then sorting only the few orphans in, gives the fully sorted plan.
    actions = [a for name in decisions for a in decisions[name].actions]
    rolled = instances.roll(decisions, views)
    if rolled:
        actions = [a for name in decisions for a in rolled.get(name, decisions[name].actions)]
    if orphans:
        actions = sorted(actions + orphans, key=steps.order)
    return Plan(tuple(actions), decisions, rolled)


def _decide(
    view: planview.BackendView,
    backend_jobs: tuple[planview.JobView, ...],
    managed: frozenset[str],
    desired_complete: bool,
    lora: planview.LoraRecord = planview.NO_LORAS,
) -> Decision:
    facts = _facts(view, backend_jobs, managed, desired_complete)
    actions: list[steps.Action] = []
    if desired_complete:
        actions += _cancellations(facts, backend_jobs)
    actions += admission.admit(view, _declared_actions(facts))
    freed: frozenset[names.ModelKey] = frozenset()
    if view.runs_instances:
        started = instances.decide(facts)
        freed = instances.freed(facts, started)
        actions += started
    actions += _undeclared_actions(facts, freed)
    actions += warmth.decide(view, facts.desired, facts.active)  # warm models (issue 16)
    actions += loras.decide(view, lora, desired_complete)  # LoRA adapters (issue 16)
    return Decision(
        view, backend_jobs, managed, desired_complete, tuple(sorted(actions, key=steps.order)),
        lora,
    )  # fmt: skip


def _facts(
    view: planview.BackendView,
    backend_jobs: Iterable[planview.JobView],
    managed: Iterable[str],
    desired_complete: bool,
) -> Facts:
    desired: dict[names.ModelKey, planview.DesiredModel] = {}
    # Two spellings of one model cannot both be stored; if given anyway, keep one, stably.
    for model in sorted(view.desired, key=lambda m: (m.name, m.declaration)):
        desired.setdefault(names.key(model.name, view.type), model)
    active: set[names.ModelKey] = set()
    finished: dict[names.ModelKey, list[planview.JobView]] = defaultdict(list)
    for job in sorted(backend_jobs, key=lambda j: j.job_id):
        job_key = names.key(job.model_key, view.type)
        if job.active:
            active.add(job_key)
        else:
            finished[job_key].append(job)
    return Facts(
        view=view,
        desired=desired,
        active=frozenset(active),
        finished={k: tuple(v) for k, v in finished.items()},
        managed=frozenset(names.key(m, view.type) for m in managed),
        desired_complete=desired_complete,
    )


def _cancellations(
    facts: Facts | None, backend_jobs: Iterable[planview.JobView]
) -> list[steps.Action]:
    """Active jobs of one backend (None: no longer declared) that nobody wants any more:
    garbage collection of the queue (DESIGN section 2)."""
    result: list[steps.Action] = []
    for job in backend_jobs:
        reason = _cancel_reason(facts, job) if job.active else None
        if reason is not None:
            result.append(steps.CancelJob(job.job_id, job.backend, job.model, reason))
    return result


def _cancel_reason(facts: Facts | None, job: planview.JobView) -> steps.Reason | None:
    if facts is None:
        return steps.Reason(steps.ReasonCode.BACKEND_DELETED, "the backend is no longer declared")
    view = facts.view
    if not view.in_pool:
        return steps.Reason(
            steps.ReasonCode.NOT_IN_POOL, "the backend is in no pool; it is observed only"
        )
    if not view.can_pull:
        return steps.Reason(
            steps.ReasonCode.BACKEND_CANNOT_PULL, f"a {view.type} backend cannot download"
        )
    if names.key(job.model_key, view.type) not in facts.desired:
        return steps.Reason(
            steps.ReasonCode.NOT_DESIRED, "the model is no longer declared on this backend"
        )
    return None


def _declared_actions(facts: Facts) -> list[steps.Action]:
    """Pull, hold or report each declared model the backend does not serve."""
    view = facts.view
    if view.observed is None:
        return []  # nothing is known about the backend; its status says why
    served = {names.key(model.name, view.type) for model in view.observed.models}
    result: list[steps.Action] = []
    for model_key, model in facts.desired.items():
        if model_key not in served:
            action = _missing(facts, model_key, model)
            if action is not None:
                result.append(action)
    return result


def _missing(
    facts: Facts, model_key: names.ModelKey, model: planview.DesiredModel
) -> steps.Action | None:
    view = facts.view
    if not view.can_pull:
        text = f"declared but not served; llmctl never downloads onto {view.type}"
        return _not_served(view, model.name, steps.ReasonCode.CANNOT_PULL, text)
    if not facts.fresh:
        text = "declared but not present; the pull waits for a fresh observation"
        return _not_served(view, model.name, steps.ReasonCode.OBSERVATION_STALE, text)
    if model_key in facts.active:
        return None  # the download is under way; its progress is the report
    return _pull_or_hold(facts, model_key, model)


def _pull_or_hold(
    facts: Facts, model_key: names.ModelKey, model: planview.DesiredModel
) -> steps.Pull | steps.Hold:
    earlier = facts.finished.get(model_key, ())
    # Several finished jobs should not be given, but if they are, any hold wins: a user's
    # cancel is never overridden by an older or newer record.
    for job in earlier:
        held = _held(job)
        if held is not None and job.declaration == model.declaration:
            return steps.Hold(facts.view.name, model.name, job.job_id, held)
    code, text = steps.ReasonCode.MISSING, "declared but not present"
    if any(_held(job) is not None for job in earlier):
        code, text = steps.ReasonCode.DECLARATION_CHANGED, f"{text}; declaration changed since held"
    elif any(job.state is dwjobs.JobState.FAILED for job in earlier):
        code, text = (
            steps.ReasonCode.RETRY_AFTER_FAILURE,
            f"{text}; last download failed transiently",
        )
    return steps.Pull(
        facts.view.name, model.name, model_key, model.declaration, steps.Reason(code, text)
    )


def _held(job: planview.JobView) -> steps.Reason | None:
    """Why a finished job keeps its model from being queued again, or None if it does not."""
    retry = "re-queued when its declaration changes or a user retries it"
    match job.state:
        case dwjobs.JobState.CANCELLED:
            return steps.Reason(steps.ReasonCode.HELD_CANCELLED, f"download cancelled; {retry}")
        # A failure without a class is treated as permanent: never retried by accident.
        case dwjobs.JobState.FAILED if job.error_class is None or not job.error_class.retryable:
            failure = job.error_class or "unknown"
            return steps.Reason(
                steps.ReasonCode.HELD_FAILED, f"download failed ({failure}); {retry}"
            )
        case _:
            return None


def _undeclared_actions(facts: Facts, freed: frozenset[names.ModelKey]) -> list[steps.Action]:
    """Prune, or report with the reason it is kept, each served model nobody declared
    (``freed``: weights whose instance this plan stops, pruned as if not loaded)."""
    view = facts.view
    # With the desired state read incompletely, "not declared" cannot be known.
    if view.observed is None or view.type not in _REPORTS_UNDECLARED or not facts.desired_complete:
        return []
    result: list[steps.Action] = []
    files = {names.key(a.source, view.type) for a in view.adapters}  # a node's adapter files
    for served in view.observed.models:
        model_key = names.key(served.name, view.type)
        if model_key in facts.desired or served.parent is not None or model_key in files:
            continue  # adapters and their files: `loras`
        kept = _kept(facts, served.loaded and model_key not in freed, model_key)
        if kept is None:
            result.append(steps.Prune(view.name, served.name, _prune_reason(view.prune)))
        else:
            result.append(
                steps.ReportDrift(view.name, steps.DriftKind.SERVED_NOT_DECLARED, served.name, kept)
            )
    return result


def _kept(facts: Facts, loaded: bool, model_key: names.ModelKey) -> steps.Reason | None:
    """Why an undeclared model stays (the first rule that keeps it), or None to prune it."""
    view = facts.view
    policy = view.prune
    rules = (
        (
            not view.in_pool,
            steps.ReasonCode.NOT_IN_POOL,
            "the backend is in no pool; observed only",
        ),
        (
            not view.can_delete,
            steps.ReasonCode.CANNOT_DELETE,
            f"llmctl never deletes on {view.type}",
        ),
        (policy is spec.PrunePolicy.NONE, steps.ReasonCode.PRUNE_NONE, "prune: none"),
        (not facts.fresh, steps.ReasonCode.OBSERVATION_STALE, "observation is stale; no prune"),
        (
            not facts.desired and policy is not spec.PrunePolicy.ALL,
            steps.ReasonCode.EMPTY_DESIRED,
            "nothing is declared on this backend; only prune: all empties it",
        ),
        (
            policy is spec.PrunePolicy.MANAGED and model_key not in facts.managed,
            steps.ReasonCode.NOT_MANAGED,
            "not pulled by llmctl; prune: managed keeps it",
        ),
        (loaded, steps.ReasonCode.LOADED, "loaded; pruned after it unloads"),
        (model_key in facts.active, steps.ReasonCode.BEING_PULLED, "a download of it is active"),
    )
    for applies, code, text in rules:
        if applies:
            return steps.Reason(code, text)
    return None


def _prune_reason(policy: spec.PrunePolicy) -> steps.Reason:
    match policy:
        case spec.PrunePolicy.ALL:
            return steps.Reason(steps.ReasonCode.UNDECLARED, "not declared; prune: all")
        case spec.PrunePolicy.MANAGED:
            return steps.Reason(
                steps.ReasonCode.UNDECLARED_MANAGED, "pulled by llmctl, no longer declared"
            )
        case spec.PrunePolicy.NONE:
            raise AssertionError("prune: none never prunes; _kept keeps every model")
        case _:
            assert_never(policy)


def _not_served(
    view: planview.BackendView, model: str, code: steps.ReasonCode, text: str
) -> steps.ReportDrift:
    return steps.ReportDrift(
        view.name, steps.DriftKind.DECLARED_NOT_SERVED, model, steps.Reason(code, text)
    )
