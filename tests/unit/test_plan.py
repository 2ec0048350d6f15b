"""The planner's rules, one table row (or test) per rule, named as behaviour sentences."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from dwqueue import jobs
from runtimestate import desired
from runtimestate.desired import spec
from runtimestate.reconcile import plan, planview, steps

OLLAMA = spec.BackendType.OLLAMA
VLLM = spec.BackendType.VLLM
OPENAI = spec.BackendType.OPENAI
GEMINI = spec.BackendType.GEMINI
NONE = spec.PrunePolicy.NONE
MANAGED = spec.PrunePolicy.MANAGED
ALL = spec.PrunePolicy.ALL
S = jobs.JobState
E = jobs.ErrorClass

Row = tuple[str, str, str, str]  # (action, backend, model, reason code)


def node(
    name: str = "gpu-1",
    type: spec.BackendType = OLLAMA,
    *,
    desired: Iterable[str] = (),
    served: Iterable[str] | None = (),
    loaded: Iterable[str] = (),
    prune: spec.PrunePolicy = MANAGED,
    stale: bool = False,
    can_pull: bool | None = None,
    can_delete: bool | None = None,
    in_pool: bool = True,
) -> planview.BackendView:
    """A backend view; served=None means no observation at all. Declarations are 'd1'."""
    observed = None
    if served is not None:
        models = [planview.ServedModel(m) for m in served]
        models += [planview.ServedModel(m, loaded=True) for m in loaded]
        observed = planview.ObservedView(tuple(models), stale=stale)
    return planview.BackendView(
        name=name,
        type=type,
        prune=prune,
        can_pull=type is OLLAMA if can_pull is None else can_pull,
        can_delete=type is OLLAMA if can_delete is None else can_delete,
        desired=tuple(planview.DesiredModel(m, "d1") for m in desired),
        observed=observed,
        in_pool=in_pool,
    )


def job(
    model: str,
    state: jobs.JobState = S.RUNNING,
    *,
    backend: str = "gpu-1",
    error: jobs.ErrorClass | None = None,
    declaration: str = "d1",
    job_id: str = "J1",
) -> planview.JobView:
    return planview.JobView(job_id, backend, model, model, state, declaration, error)


def rows(result: plan.Plan) -> list[Row]:
    out: list[Row] = []
    for action in result.actions:
        match action:
            case steps.ReportDrift():
                out.append((action.kind.value, action.backend, action.model, action.reason.code))
            case _:
                name = type(action).__name__.lower()
                out.append((name, action.backend, action.model, action.reason.code))
    return out


C = steps.ReasonCode


def case(
    name: str,
    backends: list[planview.BackendView],
    expected: list[Row],
    *,
    jobs: list[planview.JobView] | None = None,
    managed: set[tuple[str, str]] | None = None,
    complete: bool = True,
) -> Any:
    """One table row: the views, what the plan should hold (in order), and the other inputs."""
    return pytest.param(backends, jobs or [], managed or set(), complete, expected, id=name)


CASES = [
    # names
    case(
        "declaring_llama3_where_llama3_latest_is_served_does_nothing",
        [node(desired=["llama3"], served=["llama3:latest"])],
        [],
    ),
    case(
        "names_are_compared_case_insensitively_on_ollama",
        [node(desired=["Llama3"], served=["llama3:latest"])],
        [],
    ),
    case(
        "the_default_namespace_is_implied_on_ollama",
        [node(desired=["library/llama3:latest"], served=["llama3:latest"])],
        [],
    ),
    case(
        "another_tag_is_another_model",
        [node(desired=["llama3:8b"], served=["llama3:latest"])],
        [
            ("pull", "gpu-1", "llama3:8b", C.MISSING),
            ("served_not_declared", "gpu-1", "llama3:latest", C.NOT_MANAGED),
        ],
    ),
    # pulls and holds
    case(
        "a_declared_missing_model_is_pulled",
        [node(desired=["llama3"])],
        [("pull", "gpu-1", "llama3", C.MISSING)],
    ),
    case(
        "a_model_being_pulled_is_not_pulled_again",
        [node(desired=["llama3"])],
        [],
        jobs=[job("llama3")],
    ),
    case(
        "a_queued_job_under_another_spelling_counts_as_active",
        [node(desired=["llama3"])],
        [],
        jobs=[job("llama3:latest", S.QUEUED)],
    ),
    case(
        "a_cancelled_download_is_held_at_the_same_declaration",
        [node(desired=["llama3"])],
        [("hold", "gpu-1", "llama3", C.HELD_CANCELLED)],
        jobs=[job("llama3", S.CANCELLED, error=E.CANCELLED)],
    ),
    case(
        "a_permanently_failed_download_is_held",
        [node(desired=["llama3"])],
        [("hold", "gpu-1", "llama3", C.HELD_FAILED)],
        jobs=[job("llama3", S.FAILED, error=E.PERMANENT)],
    ),
    case(
        "a_download_that_ran_out_of_disk_is_held",
        [node(desired=["llama3"])],
        [("hold", "gpu-1", "llama3", C.HELD_FAILED)],
        jobs=[job("llama3", S.FAILED, error=E.INSUFFICIENT_DISK)],
    ),
    case(
        "a_failure_without_a_class_is_held_as_permanent",
        [node(desired=["llama3"])],
        [("hold", "gpu-1", "llama3", C.HELD_FAILED)],
        jobs=[job("llama3", S.FAILED)],
    ),
    case(
        "a_held_download_is_requeued_when_the_declaration_changes",
        [node(desired=["llama3"])],
        [("pull", "gpu-1", "llama3", C.DECLARATION_CHANGED)],
        jobs=[job("llama3", S.CANCELLED, error=E.CANCELLED, declaration="d0")],
    ),
    case(
        "a_transiently_failed_download_is_requeued",
        [node(desired=["llama3"])],
        [("pull", "gpu-1", "llama3", C.RETRY_AFTER_FAILURE)],
        jobs=[job("llama3", S.FAILED, error=E.TRANSIENT)],
    ),
    case(
        "a_download_whose_lease_expired_is_requeued",
        [node(desired=["llama3"])],
        [("pull", "gpu-1", "llama3", C.RETRY_AFTER_FAILURE)],
        jobs=[job("llama3", S.FAILED, error=E.LEASE_EXPIRED)],
    ),
    case(
        "a_model_deleted_after_a_successful_pull_is_pulled_again",
        [node(desired=["llama3"])],
        [("pull", "gpu-1", "llama3", C.MISSING)],
        jobs=[job("llama3", S.SUCCEEDED)],
    ),
    case(
        "a_user_retry_of_a_held_download_is_not_doubled",
        [node(desired=["llama3"])],
        [],
        jobs=[job("llama3", S.CANCELLED, error=E.CANCELLED), job("llama3", job_id="J2")],
    ),
    case(
        "a_hold_on_another_backend_does_not_hold_this_one",
        [node(desired=["llama3"])],
        [("pull", "gpu-1", "llama3", C.MISSING)],
        jobs=[job("llama3", S.CANCELLED, backend="gpu-2")],
    ),
    case(
        "a_stale_observation_reports_instead_of_pulling",
        [node(desired=["llama3"], stale=True)],
        [("declared_not_served", "gpu-1", "llama3", C.OBSERVATION_STALE)],
    ),
    case("a_backend_never_observed_gets_no_pulls", [node(desired=["llama3"], served=None)], []),
    case(
        "an_ollama_node_that_cannot_pull_reports_drift",
        [node(desired=["llama3"], can_pull=False)],
        [("declared_not_served", "gpu-1", "llama3", C.CANNOT_PULL)],
    ),
    # prunes
    case(
        "managed_prunes_an_undeclared_model_llmctl_pulled",
        [node(desired=["a"], served=["a", "old:7b"])],
        [("prune", "gpu-1", "old:7b", C.UNDECLARED_MANAGED)],
        managed={("gpu-1", "old:7b")},
    ),
    case(
        "managed_keeps_an_undeclared_model_llmctl_did_not_pull",
        [node(desired=["a"], served=["a", "old:7b"])],
        [("served_not_declared", "gpu-1", "old:7b", C.NOT_MANAGED)],
    ),
    case(
        "the_managed_record_is_compared_canonically",
        [node(desired=["a"], served=["a", "old"])],
        [("prune", "gpu-1", "old", C.UNDECLARED_MANAGED)],
        managed={("gpu-1", "OLD:latest")},
    ),
    case(
        "a_managed_record_of_another_backend_does_not_count",
        [node(desired=["a"], served=["a", "old"])],
        [("served_not_declared", "gpu-1", "old", C.NOT_MANAGED)],
        managed={("gpu-2", "old")},
    ),
    case(
        "prune_none_never_prunes",
        [node(desired=["a"], served=["a", "old"], prune=NONE)],
        [("served_not_declared", "gpu-1", "old", C.PRUNE_NONE)],
        managed={("gpu-1", "old")},
    ),
    case(
        "prune_all_prunes_any_undeclared_model",
        [node(desired=["a"], served=["a", "old"], prune=ALL)],
        [("prune", "gpu-1", "old", C.UNDECLARED)],
    ),
    case(
        "prune_all_keeps_a_loaded_model",
        [node(desired=["a"], served=["a"], loaded=["old"], prune=ALL)],
        [("served_not_declared", "gpu-1", "old", C.LOADED)],
    ),
    case(
        "managed_keeps_a_loaded_model",
        [node(desired=["a"], served=["a"], loaded=["old"])],
        [("served_not_declared", "gpu-1", "old", C.LOADED)],
        managed={("gpu-1", "old")},
    ),
    case(
        "a_stale_observation_never_prunes",
        [node(desired=["a"], served=["a", "old"], stale=True, prune=ALL)],
        [("served_not_declared", "gpu-1", "old", C.OBSERVATION_STALE)],
    ),
    case(
        "an_empty_desired_set_prunes_nothing_under_managed",
        [node(served=["old"])],
        [("served_not_declared", "gpu-1", "old", C.EMPTY_DESIRED)],
        managed={("gpu-1", "old")},
    ),
    case(
        # In a pool whose model list is empty: the empty set is declared (DESIGN section 5).
        "an_empty_desired_set_prunes_everything_under_all",
        [node(served=["old"], prune=ALL)],
        [("prune", "gpu-1", "old", C.UNDECLARED)],
    ),
    # a backend in no pool is observed only (DESIGN section 3), whatever its policy
    case(
        "a_backend_in_no_pool_prunes_nothing_under_all",
        [node(served=["old", "new:7b"], prune=ALL, in_pool=False)],
        [
            ("served_not_declared", "gpu-1", "new:7b", C.NOT_IN_POOL),
            ("served_not_declared", "gpu-1", "old", C.NOT_IN_POOL),
        ],
    ),
    case(
        "a_backend_in_no_pool_prunes_nothing_llmctl_pulled_under_managed",
        [node(served=["old"], in_pool=False)],
        [("served_not_declared", "gpu-1", "old", C.NOT_IN_POOL)],
        managed={("gpu-1", "old")},
    ),
    case(
        "a_backend_in_no_pool_reports_its_models_under_none",
        [node(served=["old"], prune=NONE, in_pool=False)],
        [("served_not_declared", "gpu-1", "old", C.NOT_IN_POOL)],
    ),
    case(
        "a_download_onto_a_backend_in_no_pool_is_cancelled",
        [node(served=["old"], prune=ALL, in_pool=False)],
        [
            ("canceljob", "gpu-1", "x", C.NOT_IN_POOL),
            ("served_not_declared", "gpu-1", "old", C.NOT_IN_POOL),
        ],
        jobs=[job("x")],
    ),
    case(
        "a_vllm_node_in_no_pool_reports_what_it_serves",
        [node("v1", VLLM, served=["qwen"], in_pool=False)],
        [("served_not_declared", "v1", "qwen", C.NOT_IN_POOL)],
    ),
    case(
        "an_unparseable_name_is_compared_exactly",
        [node(desired=["a"], served=["a", "bad name!"])],
        [("prune", "gpu-1", "bad name!", C.UNDECLARED_MANAGED)],
        managed={("gpu-1", "bad name!")},
    ),
    case(
        "managed_keeps_an_unparseable_name_it_did_not_pull",
        [node(desired=["a"], served=["a", "bad name!"])],
        [("served_not_declared", "gpu-1", "bad name!", C.NOT_MANAGED)],
    ),
    case(
        "prune_all_prunes_an_unparseable_name",
        [node(desired=["a"], served=["a", "bad name!"], prune=ALL)],
        [("prune", "gpu-1", "bad name!", C.UNDECLARED)],
    ),
    case(
        "a_node_that_cannot_delete_reports_instead",
        [node(desired=["a"], served=["a", "old"], can_delete=False, prune=ALL)],
        [("served_not_declared", "gpu-1", "old", C.CANNOT_DELETE)],
    ),
    # an incomplete desired state: act on what is declared, never on what seems absent
    case(
        "an_incomplete_desired_state_still_pulls_but_never_prunes_or_cancels",
        [node(desired=["a"], served=["old"], prune=ALL)],
        [("pull", "gpu-1", "a", C.MISSING)],
        jobs=[job("x")],
        managed={("gpu-1", "old")},
        complete=False,
    ),
    case(
        "an_incomplete_desired_state_cancels_no_job_of_an_unknown_backend",
        [],
        [],
        jobs=[job("x", backend="gone")],
        complete=False,
    ),
    # jobs nobody wants
    case(
        "a_job_for_a_model_no_longer_declared_is_cancelled",
        [node(desired=["a"], served=["a"])],
        [("canceljob", "gpu-1", "x", C.NOT_DESIRED)],
        jobs=[job("x")],
    ),
    case(
        "the_active_jobs_of_a_deleted_backend_are_cancelled",
        [],
        [("canceljob", "gone", "x", C.BACKEND_DELETED)],
        jobs=[job("x", backend="gone"), job("y", S.CANCELLED, backend="gone", job_id="J2")],
    ),
    case(
        "a_job_on_a_backend_that_cannot_pull_is_cancelled",
        [node(type=VLLM, desired=["x"], served=["x"])],
        [("canceljob", "gpu-1", "x", C.BACKEND_CANNOT_PULL)],
        jobs=[job("x")],
    ),
    case(
        "a_model_being_pulled_is_not_pruned_in_the_same_cycle",
        [node(desired=["a"], served=["a", "old"], prune=ALL)],
        [
            ("canceljob", "gpu-1", "old", C.NOT_DESIRED),
            ("served_not_declared", "gpu-1", "old", C.BEING_PULLED),
        ],
        jobs=[job("old")],
    ),
    # vLLM and cloud: observe and report, never act
    case(
        "a_vllm_node_reports_drift_both_ways_and_is_sent_nothing",
        [node("v1", VLLM, desired=["meta/Llama-3"], served=["qwen"], prune=ALL)],
        [
            ("declared_not_served", "v1", "meta/Llama-3", C.CANNOT_PULL),
            ("served_not_declared", "v1", "qwen", C.CANNOT_DELETE),
        ],
    ),
    case(
        "vllm_names_are_matched_exactly",
        [node("v1", VLLM, desired=["Qwen/Qwen2"], served=["qwen/qwen2"])],
        [
            ("declared_not_served", "v1", "Qwen/Qwen2", C.CANNOT_PULL),
            ("served_not_declared", "v1", "qwen/qwen2", C.CANNOT_DELETE),
        ],
    ),
    case(
        "a_vllm_node_serving_what_is_declared_has_an_empty_plan",
        [node("v1", VLLM, desired=["qwen"], served=["qwen"])],
        [],
    ),
    case(
        "an_incomplete_desired_state_reports_no_undeclared_model",
        [node("v1", VLLM, desired=["qwen"], served=["x"])],
        [("declared_not_served", "v1", "qwen", C.CANNOT_PULL)],
        complete=False,
    ),
    case(
        "an_openai_provider_reports_declared_models_it_does_not_list",
        [node("oa", OPENAI, desired=["gpt-4o"], served=["gpt-4o-mini", "o1"])],
        [("declared_not_served", "oa", "gpt-4o", C.CANNOT_PULL)],
    ),
    case(
        "a_gemini_catalogue_of_undeclared_models_is_not_drift",
        [
            node(
                "gm",
                GEMINI,
                desired=["gemini-2.0-flash"],
                served=["gemini-2.0-flash", "gemini-pro"],
            )
        ],
        [],
    ),
]


@pytest.mark.parametrize(("backends", "job_list", "managed", "complete", "expected"), CASES)
def test_rule(
    backends: list[planview.BackendView],
    job_list: list[planview.JobView],
    managed: set[tuple[str, str]],
    complete: bool,
    expected: list[Row],
) -> None:
    result = plan.compute(backends, jobs=job_list, managed=managed, desired_complete=complete)
    assert rows(result) == expected


def test_declaring_llama3_on_a_node_with_llama3_latest_does_nothing_cycle_after_cycle() -> None:
    view = node(desired=["llama3"], served=["llama3:latest"], prune=ALL)
    for _ in range(3):
        result = plan.compute([view], managed={("gpu-1", "llama3:latest")})
        assert result.actions == ()


def test_a_pull_carries_the_declared_name_the_canonical_key_and_the_declaration() -> None:
    view = dataclasses.replace(node(), desired=(planview.DesiredModel("Llama3", "m7.2/p1.4"),))
    (pull,) = plan.compute([view]).of(steps.Pull)
    assert (pull.model, pull.model_key, pull.declaration) == (
        "Llama3",
        "llama3:latest",
        "m7.2/p1.4",
    )


def test_with_prune_all_a_loaded_undeclared_model_goes_after_it_unloads() -> None:
    loaded = node(desired=["a"], served=["a"], loaded=["old"], prune=ALL)
    assert plan.compute([loaded]).of(steps.Prune) == ()
    unloaded = node(desired=["a"], served=["a", "old"], prune=ALL)
    assert [p.model for p in plan.compute([unloaded]).of(steps.Prune)] == ["old"]


def test_actions_are_ordered_by_backend_then_cancel_prune_pull_hold_drift() -> None:
    b = node("b", desired=["new", "held"], served=["old", "x"], prune=ALL)
    a = node("a", desired=["m"])
    job_list = [
        job("x", backend="b", job_id="J9"),
        job("held", S.CANCELLED, backend="b", job_id="J1"),
    ]
    result = plan.compute([b, a], jobs=job_list)
    assert [(type(x).__name__, x.backend, x.model) for x in result.actions] == [
        ("Pull", "a", "m"),
        ("CancelJob", "b", "x"),
        ("Prune", "b", "old"),
        ("Pull", "b", "new"),
        ("Hold", "b", "held"),
        ("ReportDrift", "b", "x"),
    ]


def test_the_plan_does_not_depend_on_input_order() -> None:
    views = [
        node("a", desired=["m", "n"], served=["o", "p"], prune=ALL),
        node("b", VLLM, served=["q"]),
    ]
    job_list = [job("z", job_id="J1"), job("y", backend="a", job_id="J2")]
    forward = plan.compute(views, jobs=job_list)
    backward = plan.compute(
        [dataclasses.replace(v, desired=v.desired[::-1]) for v in reversed(views)],
        jobs=job_list[::-1],
    )
    assert forward == backward
    assert len(forward.actions) == 7


def test_two_views_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="share a name"):
        plan.compute([node("a"), node("a")])


def test_informative_actions_are_not_mutating() -> None:
    informative = plan.compute([node("v", VLLM, desired=["x"])])
    assert informative.actions
    assert informative.mutating == ()
    assert plan.compute([node(desired=["x"])]).mutating


def test_for_backend_keeps_only_that_backends_actions() -> None:
    result = plan.compute([node("a", desired=["x"]), node("b", desired=["y"])])
    assert [p.model for p in result.for_backend("b").of(steps.Pull)] == ["y"]
    assert result.for_backend("c").actions == ()


def test_describe_gives_one_readable_line_per_action() -> None:
    result = plan.compute(
        [node(desired=["llama3"], served=["old"], prune=ALL), node("v", VLLM, served=["q"])],
        jobs=[job("x", backend="gone", job_id="01J")],
    )
    assert result.describe() == [
        "cancel download 01J of x on gone: the backend is no longer declared",
        "prune old on gpu-1: not declared; prune: all",
        "pull llama3 on gpu-1: declared but not present",
        "drift on v: q served not declared (llmctl never deletes on vllm)",
    ]


def test_a_hold_names_the_job_and_how_to_release_it() -> None:
    result = plan.compute([node(desired=["m"])], jobs=[job("m", S.CANCELLED, job_id="01K")])
    (hold,) = result.of(steps.Hold)
    assert hold.job_id == "01K"
    assert "user retries" in hold.describe()


# --- building views from the desired state -------------------------------------------------

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def meta(id: int, generation: int = 1) -> spec.Meta:
    return spec.Meta(id, generation, T0, T0)


def fleet(
    model_generation: int = 1,
    pool_generation: int = 1,
    backend_generation: int = 1,
    pool_models: Sequence[str] = ("Llama3",),
    model_joined: int = 1,
    backend_joined: int = 1,
    dated: bool = True,
) -> desired.DesiredState:
    """gpu-1 gets Llama3 from `default` and `extra`, qwen from `extra`; v1 both from `extra`.
    ``model_joined`` and ``backend_joined`` date Llama3's and gpu-1's joining of `default`;
    ``dated=False`` leaves every membership undated (a state built without the store)."""
    backends_joined = {
        ("default", "gpu-1"): backend_joined,
        ("extra", "gpu-1"): 1,
        ("extra", "v1"): 1,
    }
    models_joined = {
        ("default", "llama3:latest"): model_joined,
        ("extra", "llama3:latest"): 1,
        ("extra", "qwen:latest"): 1,
    }
    return desired.DesiredState(
        backends=(
            spec.Backend(
                spec.BackendSpec("gpu-1", OLLAMA, "http://a"), meta(1, backend_generation)
            ),
            spec.Backend(spec.BackendSpec("v1", VLLM, "http://b", prune=ALL), meta(2)),
        ),
        models=(
            spec.Model(spec.ModelSpec("Llama3"), meta(10, model_generation)),
            spec.Model(spec.ModelSpec("qwen"), meta(11)),
        ),
        pools=(
            spec.Pool(
                spec.PoolSpec("default", backends=("gpu-1",), models=tuple(pool_models)),
                meta(20, pool_generation),
            ),
            spec.Pool(
                spec.PoolSpec("extra", backends=("gpu-1", "v1"), models=("llama3:latest", "qwen")),
                meta(21),
            ),
        ),
        backends_joined=backends_joined if dated else {},
        models_joined=models_joined if dated else {},
    )


def declaration_of(state: desired.DesiredState, model: str = "Llama3") -> str:
    found = {m.name: m.declaration for m in planview.desired_models(state, "gpu-1")}
    return found[model]


def test_desired_models_are_the_union_of_the_backends_pools() -> None:
    assert [m.name for m in planview.desired_models(fleet(), "gpu-1")] == ["Llama3", "qwen"]
    assert [m.name for m in planview.desired_models(fleet(), "v1")] == ["Llama3", "qwen"]
    assert planview.desired_models(fleet(), "unknown") == ()


def test_the_declaration_names_the_backend_model_and_every_placing_pool() -> None:
    assert declaration_of(fleet()) == "b1/m10.1/p20.1/p21.1"
    assert declaration_of(fleet(), "qwen") == "b1/m11.1/p21.1"


def test_the_declaration_changes_with_the_model_or_its_placings_but_not_the_backend() -> None:
    base = declaration_of(fleet())
    assert declaration_of(fleet(model_generation=2)) != base
    assert declaration_of(fleet(pool_models=())) != base
    assert declaration_of(fleet(backend_generation=5)) == base


def test_a_pool_edit_for_other_members_keeps_the_declaration_and_a_rejoin_changes_it() -> None:
    # `default` at generation 4: other members came and went since Llama3 and gpu-1 joined.
    base = declaration_of(fleet())
    assert declaration_of(fleet(pool_generation=4)) == base
    rejoined_model = declaration_of(fleet(pool_generation=4, model_joined=4))
    rejoined_backend = declaration_of(fleet(pool_generation=4, backend_joined=3))
    assert len({base, rejoined_model, rejoined_backend}) == 3
    assert rejoined_model == "b1/m10.1/p20.4/p21.1"
    assert declaration_of(fleet(pool_generation=4), "qwen") == declaration_of(fleet(), "qwen")


def test_an_undated_membership_counts_as_joined_at_the_pools_generation() -> None:
    assert declaration_of(fleet(pool_generation=4, dated=False)) == "b1/m10.1/p20.4/p21.1"


def test_the_desired_key_changes_when_a_member_rejoins() -> None:
    # The backend cycle reuses a backend's view while its key is unchanged (runtimestate.reconcile.reuse).
    base = fleet().key_of("gpu-1")
    assert fleet().key_of("gpu-1") == base
    assert fleet(model_joined=2).key_of("gpu-1") != base
    assert fleet(backend_joined=2).key_of("gpu-1") != base


def view(
    state: desired.DesiredState,
    backend: spec.Backend,
    observed: planview.ObservedView | None,
    can: bool = True,
) -> planview.BackendView:
    return planview.backend_view(state, backend, observed, can_pull=can, can_delete=can)


def test_a_backend_view_can_pull_and_delete_as_its_adapter_declares() -> None:
    state = fleet()
    ollama = view(state, state.backends[0], None)
    vllm = view(state, state.backends[1], planview.ObservedView(()), can=False)
    assert (ollama.can_pull, ollama.can_delete, ollama.prune) == (True, True, MANAGED)
    assert (vllm.can_pull, vllm.can_delete, vllm.prune) == (False, False, ALL)
    assert vllm.observed == planview.ObservedView(())
    assert [m.name for m in ollama.desired] == ["Llama3", "qwen"]


def test_a_backend_view_is_in_a_pool_only_when_a_pool_lists_the_backend() -> None:
    state = fleet()
    placed = view(state, state.backends[0], None)
    nowhere = view(dataclasses.replace(state, pools=()), state.backends[0], None)
    empty_pool = spec.Pool(spec.PoolSpec("empty", backends=("gpu-1",)), meta(22))
    emptied = view(dataclasses.replace(state, pools=(empty_pool,)), state.backends[0], None)
    assert (placed.in_pool, bool(placed.desired)) == (True, True)
    assert (nowhere.in_pool, nowhere.desired) == (False, ())
    assert (emptied.in_pool, emptied.desired) == (True, ())


def test_models_desired_on_a_backend_in_no_pool_are_refused() -> None:
    with pytest.raises(ValueError, match="in no pool"):
        node(desired=["llama3"], in_pool=False)


def test_dropping_a_backends_last_pool_under_prune_all_deletes_nothing() -> None:
    # `apply --prune` of a file whose pools no longer list the backend: observed only.
    state = desired.DesiredState(
        backends=(spec.Backend(spec.BackendSpec("gpu-1", OLLAMA, "http://a", prune=ALL), meta(1)),),
        models=(spec.Model(spec.ModelSpec("llama3"), meta(10)),),
        pools=(spec.Pool(spec.PoolSpec("default", models=("llama3",)), meta(20, 2)),),
    )
    served = planview.ObservedView((planview.ServedModel("llama3:latest"),))
    result = plan.compute(
        [view(state, state.backends[0], served)],
        managed={("gpu-1", "llama3:latest")},
    )
    assert result.of(steps.Prune) == ()
    (kept,) = result.of(steps.ReportDrift)
    assert (kept.model, kept.reason.code) == ("llama3:latest", C.NOT_IN_POOL)


def test_a_job_view_is_built_from_a_queue_job() -> None:
    queued = jobs.Job(
        id=jobs.JobId("01J"), backend="gpu-1", model="llama3", model_key="llama3:latest",
        declaration="d", state=S.FAILED, attempts=3, max_attempts=3, next_attempt_at=T0,
        lease_owner=None, lease_expires_at=None, progress=jobs.Progress(), error="x",
        error_class=E.PERMANENT, seq=4, created_at=T0, updated_at=T0, started_at=None,
        finished_at=T0,
    )  # fmt: skip
    view = planview.JobView.of(queued)
    expected = planview.JobView(
        "01J", "gpu-1", "llama3", "llama3:latest", S.FAILED, "d", E.PERMANENT
    )
    assert view == expected
    assert not view.active
