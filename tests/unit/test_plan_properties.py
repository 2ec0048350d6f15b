"""Invariants of the planner, checked on generated fleets (hypothesis).

A world is what the planner sees: backend views, jobs (at most one active and one latest
finished job per backend and model, as the queue guarantees), the managed record and whether
the desired state was read completely. `apply` plays a plan into a world the way the backend
cycle and a perfect download worker would, so convergence can be checked.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dwqueue import jobs
from runtimestate.desired import names, spec
from runtimestate.reconcile import plan, planview, steps

# Spellings that collide on Ollama (llama3 / llama3:latest / Llama3, qwen2 with or without the
# library namespace) and differ on vLLM, plus one name Ollama's grammar rejects.
DECLARABLE = [
    "llama3",
    "llama3:latest",
    "Llama3",
    "qwen2:0.5b",
    "library/qwen2:0.5b",
    "phi3",
    "Org/Model",
]
SERVABLE = [*DECLARABLE, "mistral:7b", "org/model", "bad name!"]
BACKEND_NAMES = ["a", "b", "c"]
GONE = "gone"


@dataclasses.dataclass(frozen=True)
class World:
    backends: tuple[planview.BackendView, ...]
    jobs: tuple[planview.JobView, ...]
    managed: frozenset[tuple[str, str]]
    desired_complete: bool

    def plan(self) -> plan.Plan:
        return plan.compute(
            self.backends,
            jobs=self.jobs,
            managed=self.managed,
            desired_complete=self.desired_complete,
        )

    def view(self, name: str) -> planview.BackendView:
        (found,) = [v for v in self.backends if v.name == name]
        return found


def key(name: str, view: planview.BackendView) -> str:
    return names.key(name, view.type)


def desired_keys(view: planview.BackendView) -> set[str]:
    return {key(m.name, view) for m in view.desired}


@st.composite
def views(draw: st.DrawFn, name: str) -> planview.BackendView:
    # Ollama, the only type that is acted on, most often.
    kind = draw(st.sampled_from([*[spec.BackendType.OLLAMA] * 3, *spec.BackendType]))
    # Mostly in a pool; a backend in no pool has nothing desired (it is observed only).
    in_pool = draw(st.integers(0, 4)) != 0
    # The store declares a model once under Ollama's comparison (llama3 == Llama3:latest).
    declared = draw(
        st.lists(
            st.sampled_from(DECLARABLE),
            unique_by=lambda m: names.key(m, spec.BackendType.OLLAMA),
            max_size=4 if in_pool else 0,
        )
    )
    observed = None
    if draw(st.booleans()) or draw(st.booleans()):
        served = draw(st.lists(st.sampled_from(SERVABLE), unique=True, max_size=5))
        models = tuple(planview.ServedModel(m, loaded=draw(st.booleans())) for m in served)
        observed = planview.ObservedView(models, stale=draw(st.integers(0, 4)) == 0)
    return planview.BackendView(
        name=name,
        type=kind,
        prune=draw(st.sampled_from(spec.PrunePolicy)),
        can_pull=kind is spec.BackendType.OLLAMA,
        can_delete=kind is spec.BackendType.OLLAMA,
        desired=tuple(
            planview.DesiredModel(m, draw(st.sampled_from(["d1", "d2"]))) for m in declared
        ),
        observed=observed,
        in_pool=in_pool,
    )


FINISHED = [
    (jobs.JobState.SUCCEEDED, None),
    (jobs.JobState.CANCELLED, jobs.ErrorClass.CANCELLED),
    (jobs.JobState.FAILED, jobs.ErrorClass.PERMANENT),
    (jobs.JobState.FAILED, jobs.ErrorClass.INSUFFICIENT_DISK),
    (jobs.JobState.FAILED, jobs.ErrorClass.TRANSIENT),
    (jobs.JobState.FAILED, None),
]


@st.composite
def job_lists(draw: st.DrawFn, backends: list[str]) -> tuple[planview.JobView, ...]:
    """At most one active and one finished job per (backend, model key), as the queue keeps."""
    result: list[planview.JobView] = []
    counter = itertools.count()
    pairs = {(b, names.key(m, "ollama")): m for b in backends for m in DECLARABLE}
    for (backend, model_key), model in sorted(pairs.items()):
        declaration = draw(st.sampled_from(["d1", "d2"]))
        if draw(st.integers(0, 5)) == 0:
            state = draw(st.sampled_from([jobs.JobState.QUEUED, jobs.JobState.RUNNING]))
            job_id = f"J{next(counter):03}"
            result.append(planview.JobView(job_id, backend, model, model_key, state, declaration))
        if draw(st.integers(0, 3)) == 0:
            state, error = draw(st.sampled_from(FINISHED))
            job_id = f"J{next(counter):03}"
            result.append(
                planview.JobView(job_id, backend, model, model_key, state, declaration, error)
            )
    return tuple(result)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    chosen = draw(st.lists(st.sampled_from(BACKEND_NAMES), unique=True, max_size=3))
    backends = tuple(draw(views(name)) for name in chosen)
    # Mostly models that are really served (so `managed` prunes happen), plus stray records.
    served = [(v.name, m.name) for v in backends if v.observed for m in v.observed.models]
    pairs = st.tuples(st.sampled_from([*BACKEND_NAMES, GONE]), st.sampled_from(SERVABLE))
    managed = draw(st.frozensets(st.sampled_from(served) if served else pairs))
    managed |= draw(st.frozensets(pairs, max_size=2))
    job_list = draw(job_lists([*chosen, GONE]))
    return World(backends, job_list, managed, desired_complete=draw(st.integers(0, 3)) != 0)


def apply(world: World, result: plan.Plan) -> World:
    """Play a plan: a pull completes at once, a prune deletes, a cancel cancels."""
    served = {v.name: list(v.observed.models) if v.observed else None for v in world.backends}
    job_list = list(world.jobs)
    managed = set(world.managed)
    counter = itertools.count(1000)
    for action in result.actions:
        match action:
            case steps.Pull():
                view = world.view(action.backend)
                shown = names.key(action.model, view.type)  # Ollama lists the short form
                models = served[action.backend]
                assert models is not None
                models.append(planview.ServedModel(shown))
                managed.add((action.backend, action.model_key))
                job_list = [
                    j
                    for j in job_list
                    if (j.backend, j.model_key) != (action.backend, action.model_key)
                ]
                job_list.append(
                    planview.JobView(
                        f"J{next(counter)}",
                        action.backend,
                        action.model,
                        action.model_key,
                        jobs.JobState.SUCCEEDED,
                        action.declaration,
                    )
                )
            case steps.Prune():
                models = served[action.backend]
                assert models is not None
                served[action.backend] = [m for m in models if m.name != action.model]
                view = world.view(action.backend)
                managed = {
                    (b, m)
                    for b, m in managed
                    if (b, key(m, view)) != (action.backend, key(action.model, view))
                }
            case steps.CancelJob():
                (target,) = [j for j in job_list if j.job_id == action.job_id]
                cancelled = dataclasses.replace(
                    target, state=jobs.JobState.CANCELLED, error_class=jobs.ErrorClass.CANCELLED
                )
                # The cancelled job becomes the latest finished one of its model.
                job_list = [
                    j
                    for j in job_list
                    if j.active or (j.backend, j.model_key) != (target.backend, target.model_key)
                ]
                job_list = [cancelled if j.job_id == target.job_id else j for j in job_list]
            case steps.ReportDrift() | steps.Hold():
                pass
    backends = tuple(
        dataclasses.replace(
            v, observed=dataclasses.replace(v.observed, models=tuple(served[v.name] or ()))
        )
        if v.observed
        else v
        for v in world.backends
    )
    return World(backends, tuple(job_list), frozenset(managed), world.desired_complete)


def served_model(view: planview.BackendView, name: str) -> planview.ServedModel:
    assert view.observed is not None
    (found,) = [m for m in view.observed.models if m.name == name]
    return found


PROPERTY = settings(max_examples=150, deadline=None)  # ~1 s each on a quiet machine


@PROPERTY
@given(worlds())
def test_a_declared_model_is_never_pruned(world: World) -> None:
    for prune in world.plan().of(steps.Prune):
        view = world.view(prune.backend)
        assert key(prune.model, view) not in desired_keys(view)


@PROPERTY
@given(worlds())
def test_no_model_is_both_pulled_and_pruned(world: World) -> None:
    result = world.plan()
    pulled = {(p.backend, p.model_key) for p in result.of(steps.Pull)}
    pruned = {(p.backend, key(p.model, world.view(p.backend))) for p in result.of(steps.Prune)}
    assert not pulled & pruned


@PROPERTY
@given(worlds())
def test_a_loaded_model_or_one_being_pulled_is_never_pruned(world: World) -> None:
    active = {(j.backend, j.model_key) for j in world.jobs if j.active}
    for prune in world.plan().of(steps.Prune):
        view = world.view(prune.backend)
        assert not served_model(view, prune.model).loaded
        assert (prune.backend, key(prune.model, view)) not in active


@PROPERTY
@given(worlds())
def test_prunes_follow_the_backends_policy(world: World) -> None:
    for prune in world.plan().of(steps.Prune):
        view = world.view(prune.backend)
        assert view.can_delete
        assert view.in_pool, "a backend in no pool is observed only"
        assert view.prune is not spec.PrunePolicy.NONE
        if view.prune is spec.PrunePolicy.MANAGED:
            managed = {key(m, view) for b, m in world.managed if b == view.name}
            assert key(prune.model, view) in managed
            assert view.desired, "an empty desired set prunes nothing under managed"


@PROPERTY
@given(worlds())
def test_a_stale_or_missing_observation_never_pulls_or_prunes(world: World) -> None:
    result = world.plan()
    acting = [a.backend for a in result.of(steps.Pull)] + [
        a.backend for a in result.of(steps.Prune)
    ]
    for backend in acting:
        observed = world.view(backend).observed
        assert observed is not None
        assert not observed.stale


@PROPERTY
@given(worlds())
def test_a_backend_in_no_pool_is_never_pulled_onto_or_pruned(world: World) -> None:
    result = world.plan()
    acting = {a.backend for a in result.of(steps.Pull)} | {
        a.backend for a in result.of(steps.Prune)
    }
    lonely = {v.name for v in world.backends if not v.in_pool}
    assert not acting & lonely


@PROPERTY
@given(worlds())
def test_an_incomplete_desired_state_never_prunes_or_cancels(world: World) -> None:
    result = world.plan()
    if not world.desired_complete:
        assert result.of(steps.Prune) == ()
        assert result.of(steps.CancelJob) == ()


@PROPERTY
@given(worlds())
def test_pulls_skip_active_and_held_downloads(world: World) -> None:
    for pull in world.plan().of(steps.Pull):
        view = world.view(pull.backend)
        assert view.can_pull
        assert pull.model_key in desired_keys(view)
        mine = [j for j in world.jobs if (j.backend, j.model_key) == (pull.backend, pull.model_key)]
        assert not any(j.active for j in mine)
        held = [j for j in mine if is_held(j)]
        assert all(j.declaration != pull.declaration for j in held)


@PROPERTY
@given(worlds())
def test_only_active_jobs_are_cancelled_and_only_unwanted_ones(world: World) -> None:
    result = world.plan()
    by_id = {j.job_id: j for j in world.jobs}
    cancelled = [c.job_id for c in result.of(steps.CancelJob)]
    assert len(cancelled) == len(set(cancelled))
    for job_id in cancelled:
        target = by_id[job_id]
        assert target.active
        views = {v.name: v for v in world.backends}
        view = views.get(target.backend)
        assert (
            view is None
            or not view.can_pull
            or key(target.model_key, view) not in desired_keys(view)
        )


@PROPERTY
@given(worlds())
def test_applying_a_plan_converges_and_then_stays_empty(world: World) -> None:
    first = world.plan()
    after_first = apply(world, first)
    second = after_first.plan()
    assert second.of(steps.Pull) == ()
    assert second.of(steps.CancelJob) == ()
    # A model kept only because its (now cancelled) download was active goes one cycle later.
    cancelled = {(c.backend, c.model) for c in first.of(steps.CancelJob)}
    for prune in second.of(steps.Prune):
        view = world.view(prune.backend)
        assert any(
            b == prune.backend and key(m, view) == key(prune.model, view) for b, m in cancelled
        )
    if not cancelled:
        assert not second.mutating
    final = apply(after_first, second)
    assert not final.plan().mutating
    assert_converged(final)


def is_held(job: planview.JobView) -> bool:
    if job.state is jobs.JobState.CANCELLED:
        return True
    return job.state is jobs.JobState.FAILED and not (job.error_class and job.error_class.retryable)


def assert_converged(world: World) -> None:
    """What a converged fleet looks like: nothing wanted is missing, no job is unwanted."""
    views = {v.name: v for v in world.backends}
    active = {(j.backend, j.model_key) for j in world.jobs if j.active}
    for view in world.backends:
        if not (view.can_pull and view.observed and not view.observed.stale):
            continue
        served = {key(m.name, view) for m in view.observed.models}
        for model in view.desired:
            model_key = key(model.name, view)
            mine = [j for j in world.jobs if (j.backend, j.model_key) == (view.name, model_key)]
            held = any(is_held(j) and j.declaration == model.declaration for j in mine)
            assert model_key in served or (view.name, model_key) in active or held
    if world.desired_complete:
        for backend, model_key in active:
            owner = views.get(backend)
            assert owner is not None
            assert owner.can_pull
            assert key(model_key, owner) in desired_keys(owner)


@PROPERTY
@given(worlds(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(world: World, rnd: random.Random) -> None:
    backends = list(world.backends)
    job_list = list(world.jobs)
    rnd.shuffle(backends)
    rnd.shuffle(job_list)
    shuffled = tuple(
        dataclasses.replace(v, desired=tuple(rnd.sample(v.desired, len(v.desired))))
        for v in backends
    )
    assert (
        plan.compute(
            shuffled, jobs=job_list, managed=world.managed, desired_complete=world.desired_complete
        )
        == world.plan()
    )


@PROPERTY
@given(worlds())
def test_vllm_and_cloud_backends_get_no_pull_or_prune(world: World) -> None:
    for action in world.plan().mutating:
        if isinstance(action, steps.Pull | steps.Prune):
            assert world.view(action.backend).type is spec.BackendType.OLLAMA


@given(
    st.sampled_from(["llama3", "Llama3", "library/llama3", "llama3:latest"]),
    st.sampled_from(spec.PrunePolicy),
    st.booleans(),
)
def test_llama3_declared_against_llama3_latest_served_plans_nothing(
    declared: str, policy: spec.PrunePolicy, loaded: bool
) -> None:
    view = planview.BackendView(
        "a", spec.BackendType.OLLAMA, policy, can_pull=True, can_delete=True,
        desired=(planview.DesiredModel(declared, "d1"),),
        observed=planview.ObservedView((planview.ServedModel("llama3:latest", loaded),)),
    )  # fmt: skip
    world = World((view,), (), frozenset({("a", "llama3:latest")}), True)
    assert world.plan().actions == ()
    assert apply(world, world.plan()).plan().actions == ()


@PROPERTY
@given(worlds(), worlds(), st.randoms(use_true_random=False))
def test_a_plan_reusing_the_previous_ones_decisions_equals_a_fresh_plan(
    before: World, after: World, rnd: random.Random
) -> None:
    # Backends whose view is the very object of the previous cycle may be reused; their jobs
    # and managed records come from `after`, so some reuses must be refused.
    earlier = {v.name: v for v in before.backends}
    backends = tuple(
        earlier[v.name] if v.name in earlier and rnd.random() < 0.7 else v for v in after.backends
    )
    world = dataclasses.replace(after, backends=backends)
    reused = plan.compute(
        world.backends,
        jobs=world.jobs,
        managed=world.managed,
        desired_complete=world.desired_complete,
        previous=before.plan(),
    )
    fresh = world.plan()
    assert reused == fresh
    for name, decision in fresh.decisions.items():
        assert reused.for_backend(name).actions == decision.actions


@PROPERTY
@given(worlds())
def test_an_unchanged_world_reuses_every_decision(world: World) -> None:
    first = world.plan()
    again = plan.compute(
        world.backends,
        jobs=world.jobs,
        managed=world.managed,
        desired_complete=world.desired_complete,
        previous=first,
    )
    assert again == first
    assert all(again.decisions[name] is first.decisions[name] for name in first.decisions)
