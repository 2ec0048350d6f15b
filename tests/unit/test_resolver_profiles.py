"""`Resolver.export_profiles` / `import_profiles`: the learned figures saved and restored, so a
restarted process ranks as the one that learned them; bad documents refused, naming why."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtimestate import resolver
from runtimestate.resolver import cooldown, profiles
from tests.unit.test_resolver import Clock, backend, fleet, make, model

Policy = resolver.Policy
WALL = 1_800_000_000.0  # the wall clock both processes read, in epoch seconds
NAMES = [f"gpu-{i}" for i in range(6)]
OUTCOMES = st.lists(
    st.tuples(st.integers(0, 5), st.booleans(), st.floats(0.001, 20.0)), max_size=40
)


def _adaptive(r: resolver.Resolver) -> list[str]:
    request = resolver.Request(models=("m:1b",), policy=Policy.ADAPTIVE)
    return [p.backend for p in r.resolve(request).providers()]


def _learned(outcomes: list[tuple[int, bool, float]]) -> resolver.Resolver:
    snap = fleet(*(backend(b, model("m:1b")) for b in NAMES))
    r = make(snap, exploration=0.0, wall_clock=lambda: WALL, breaker=_NO_BREAKER)
    by_name = {p.backend: p for p in r.resolve(resolver.Request(models=("m:1b",))).providers()}
    for i, ok, latency in outcomes:
        r.record_outcome(by_name[NAMES[i]], ok, latency)
    return r


_NO_BREAKER = cooldown.Policy(consecutive_failures=1000, min_calls=1000)


@settings(max_examples=60, deadline=None)
@given(outcomes=OUTCOMES)
def test_profiles_imported_into_a_fresh_resolver_give_the_same_adaptive_ranking(
    outcomes: list[tuple[int, bool, float]],
) -> None:
    learned = _learned(outcomes)
    text = json.dumps(learned.export_profiles())  # through JSON, as a file would carry it
    fresh = _learned([])
    fresh.import_profiles(text)
    assert _adaptive(fresh) == _adaptive(learned)
    assert fresh.export_profiles() == learned.export_profiles()


def test_a_fresh_resolver_without_profiles_ranks_differently() -> None:
    # The property above could pass by chance if ranking ignored the figures: it does not.
    learned = _learned([(i, True, 6.0 - i) for i in range(6)])  # gpu-5 the fastest
    assert _adaptive(learned) == [f"gpu-{i}" for i in reversed(range(6))]
    assert _adaptive(_learned([]))[0] != "gpu-5"


def test_the_profile_document_lists_each_provider_s_figures_and_when_measured() -> None:
    clock = Clock()
    snap = fleet(backend("gpu-1", model("m:1b")))
    r = make(snap, clock, wall_clock=lambda: WALL + clock.now - 1000.0)
    provider = r.resolve(resolver.Request(models=("m:1b",))).provider
    r.record_outcome(provider, True, 0.5)
    r.record_outcome(provider, False, 0.1)
    clock.advance(10)
    assert r.export_profiles() == {
        "kind": "ResolverProfiles",
        "version": 1,
        "exportedAt": "2027-01-15T08:00:10+00:00",
        "providers": [
            {
                "backend": "gpu-1",
                "model": "m:1b",
                "latencyS": 0.5,
                "errorRate": pytest.approx(0.2),
                "samples": 2,
                "measuredAt": "2027-01-15T08:00:00+00:00",
            }
        ],
    }


def test_importing_into_another_fleet_applies_only_the_providers_it_knows() -> None:
    learned = _learned([(0, True, 0.2), (1, True, 0.4), (2, False, 0.1)])
    other = make(
        fleet(backend("gpu-1", model("m:1b")), backend("gpu-9", model("m:1b"))),
        wall_clock=lambda: WALL,
    )
    assert other.import_profiles(learned.export_profiles()) == ("gpu-1/m:1b",)
    assert set(other.outcomes.figures()) == {"gpu-1/m:1b"}
    assert other.outcomes.latency == {"gpu-1/m:1b": 0.4}


def test_an_old_profile_s_error_rate_has_faded_by_its_age() -> None:
    learned = _learned([(0, False, 0.1)])  # error rate 0.2
    doc = learned.export_profiles()
    later = make(fleet(backend("gpu-0", model("m:1b"))), wall_clock=lambda: WALL + 30.0)
    later.import_profiles(doc)
    assert later.outcomes.penalty == {"gpu-0/m:1b": pytest.approx(0.1)}  # one half-life


def _doc(**provider: Any) -> dict[str, Any]:
    item = {
        "backend": "gpu-1",
        "model": "m:1b",
        "latencyS": 0.5,
        "errorRate": 0.0,
        "samples": 3,
        "measuredAt": "2027-01-15T08:00:00+00:00",
    }
    return {"kind": "ResolverProfiles", "version": 1, "providers": [{**item, **provider}]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "profiles: not JSON"),
        ([], "profiles: not a resolver profiles document"),
        ({"kind": "Other", "version": 1, "providers": []}, "not a resolver profiles document"),
        ({"kind": "ResolverProfiles", "version": 2, "providers": []}, "version 2 is not one"),
        ({"kind": "ResolverProfiles", "providers": []}, "version None is not one"),
        ({"kind": "ResolverProfiles", "version": 1, "providers": {}}, "providers must be a list"),
        (_doc(latencyS=-1), "providers[0].latencyS must be between 0 and inf"),
        (_doc(latencyS="fast"), "providers[0].latencyS must be a number"),
        (_doc(errorRate=1.5), "providers[0].errorRate must be between 0 and 1.0"),
        (_doc(samples=-1), "providers[0].samples must be a non-negative integer"),
        (_doc(samples=True), "providers[0].samples must be a non-negative integer"),
        (_doc(backend=""), "providers[0].backend must be a backend name"),
        (_doc(model=None), "providers[0].model must be a non-empty string"),
        (_doc(measuredAt="2027-01-15T08:00:00"), "measuredAt must be an ISO 8601 time"),
        (_doc(measuredAt="yesterday"), "measuredAt must be an ISO 8601 time"),
    ],
)
def test_a_document_that_is_not_a_version_1_profile_is_refused_naming_why(
    doc: object, message: str
) -> None:
    r = make(fleet(backend("gpu-1", model("m:1b"))))
    with pytest.raises(resolver.ProfileError) as raised:
        r.import_profiles(doc)
    assert message in str(raised.value)
    assert r.outcomes.figures() == {}  # nothing applied


def test_a_refused_document_changes_nothing_even_when_its_first_providers_were_good() -> None:
    good = _doc()["providers"][0]
    doc = {**_doc(), "providers": [good, {**good, "samples": "many"}]}
    r = make(fleet(backend("gpu-1", model("m:1b"))))
    with pytest.raises(profiles.ProfileError):
        r.import_profiles(doc)
    assert r.outcomes.figures() == {}
