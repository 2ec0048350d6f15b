"""The resolver's ``selector`` request field: only backends whose labels match are candidates."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from runtimestate import desired, resolver, snapshot
from runtimestate.desired import selectors, spec
from tests.unit.test_resolver import Clock, backend, fleet, model

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LABELS = {
    "gpu-a1": {"zone": "a", "gpu": "h100"},
    "gpu-a2": {"zone": "a", "gpu": "t4"},
    "gpu-b1": {"zone": "b", "gpu": "h100"},
}


def _declared(labels: dict[str, dict[str, str]]) -> desired.DesiredState:
    backends = tuple(
        spec.Backend(
            spec.make_backend(name, "ollama", f"http://{name}:11434", labels=values),
            spec.Meta(i + 1, 1, T0, T0),
        )
        for i, (name, values) in enumerate(sorted(labels.items()))
    )
    return desired.DesiredState(backends, (), ())


SNAP = fleet(
    backend("gpu-a1", model("qwen2:7b", 8192)),
    backend("gpu-a2", model("qwen2:7b", 32768)),
    backend("gpu-b1", model("qwen2:7b", 131072), model("llama3", 8192)),
)


def _resolver(
    snap: snapshot.Snapshot = SNAP, labels: dict[str, dict[str, str]] = LABELS
) -> resolver.Resolver:
    return resolver.Resolver.from_snapshot(
        snap, desired=_declared(labels), rng=random.Random(0), clock=Clock()
    )


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("zone=a", {"gpu-a1", "gpu-a2"}),
        ("zone=a,gpu=h100", {"gpu-a1"}),
        ("gpu in (h100)", {"gpu-a1", "gpu-b1"}),
        ("zone!=a", {"gpu-b1"}),
        ("", {"gpu-a1", "gpu-a2", "gpu-b1"}),
    ],
)
def test_only_backends_whose_labels_match_the_selector_are_candidates(
    selector: str, expected: set[str]
) -> None:
    request = resolver.Request(models=("qwen2:7b",), selector=selectors.parse(selector))
    result = _resolver().resolve(request)
    assert {p.backend for p in result.providers()} == expected
    excluded = {e.backend: e for e in result.excluded}
    assert set(excluded) == {"gpu-a1", "gpu-a2", "gpu-b1"} - expected
    for item in excluded.values():
        assert item.reason is resolver.Reason.SELECTOR_MISMATCH
        assert f"do not match the selector {selector}" in item.detail


def test_a_request_takes_the_selector_as_text_and_refuses_one_that_does_not_parse() -> None:
    request = resolver.Request(models=("qwen2:7b",), selector="zone=b")
    assert request.selector == selectors.parse("zone=b")
    assert _resolver().resolve(request).provider.backend == "gpu-b1"
    with pytest.raises(resolver.InvalidRequest, match=r"selector: .* at position 6 "):
        resolver.Request(selector="zone=(")
    with pytest.raises(resolver.InvalidRequest, match="selector: 3 is neither"):
        resolver.Request(selector=3)  # type: ignore[arg-type]


def test_the_diagnosis_names_the_selector_that_excluded_every_provider() -> None:
    request = resolver.Request(models=("llama3",), selector="zone=a")
    with pytest.raises(resolver.NoSatisfactoryModel) as caught:
        _resolver().resolve(request)
    assert str(caught.value) == (
        "allows only backends matching the selector zone=a; llama3 is served only by "
        "backends that do not match (gpu-b1)"
    )
    assert [e.reason for e in caught.value.exclusions if e.backend == "gpu-b1"] == [
        resolver.Reason.SELECTOR_MISMATCH
    ]


def test_the_diagnosis_also_names_a_matching_backend_that_is_down() -> None:
    snap = fleet(
        backend("gpu-a1", model("llama3"), phase="Unreachable"),
        backend("gpu-b1", model("llama3")),
    )
    with pytest.raises(resolver.NoSatisfactoryModel) as caught:
        _resolver(snap).resolve(resolver.Request(models=("llama3",), selector="zone=a"))
    assert str(caught.value).endswith("(gpu-b1) (and gpu-a1 is Unreachable)")


def test_labels_changed_in_the_desired_state_apply_to_the_next_request() -> None:
    specs = [_declared(LABELS)]
    chooser = resolver.Resolver(lambda: SNAP, specs=lambda: specs[0], clock=Clock())
    request = resolver.Request(models=("llama3",), selector="zone=b")
    assert chooser.resolve(request).provider.backend == "gpu-b1"
    specs[0] = _declared({**LABELS, "gpu-b1": {"zone": "c"}})
    with pytest.raises(resolver.NoSatisfactoryModel, match="selector zone=b"):
        chooser.resolve(request)


def test_a_selector_on_a_resolver_without_specs_is_refused_not_ignored() -> None:
    chooser = resolver.Resolver.from_snapshot(SNAP, clock=Clock())
    with pytest.raises(resolver.InvalidRequest, match="built without the backends' specs"):
        chooser.resolve(resolver.Request(models=("qwen2:7b",), selector="zone=a"))
    assert chooser.resolve(resolver.Request(models=("qwen2:7b",))).provider is not None
