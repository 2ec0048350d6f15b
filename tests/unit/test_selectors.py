"""Label selectors: Kubernetes syntax, every operator, errors that name the position."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtimestate.desired import selectors, spec

LABELS = {"zone": "a", "gpu": "h100", "tier": "gold"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("zone=a", True),
        ("zone==a", True),
        ("zone=b", False),
        ("zone!=a", False),
        ("zone!=b", True),
        ("missing!=b", True),
        ("gpu in (h100,a100)", True),
        ("gpu in (a100)", False),
        ("gpu notin (t4, a100)", True),
        ("gpu notin (h100)", False),
        ("missing notin (x)", True),
        ("zone", True),
        ("draining", False),
        ("!draining", True),
        ("!zone", False),
        ("zone=a,gpu in (h100),!draining", True),
        ("zone=a,tier=silver", False),
        ("  zone = a ,  tier=gold ", True),
        ("", True),
        ("zone=", False),
    ],
)
def test_every_operator_selects_as_kubernetes_does(text: str, matches: bool) -> None:
    assert selectors.parse(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("zone=a,,b", 8, "a label key"),
        ("=a", 1, "a label key"),
        ("gpu in (h100", 13, "closing the list"),
        ("gpu in h100", 8, "( opening"),
        ("zone=a b", 8, "a comma between requirements"),
        ("zone in ()", 10, "a label value"),
        ("zone=@", 6, "unexpected character"),
        ("zone=a,", 8, "a label key"),
        ("zone =! a", 7, "a label value"),
        ("!", 2, "a label key"),
    ],
)
def test_a_selector_that_does_not_parse_names_the_position_and_what_was_expected(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(selectors.SelectorError) as raised:
        selectors.parse(text)
    assert raised.value.position == position
    assert expected in str(raised.value)
    assert f"position {position} of" in str(raised.value)
    assert isinstance(raised.value, spec.SpecError)  # the CLI exits 2 for it


_WORDS = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(
    lambda w: w not in ("in", "notin")
)
_REQUIREMENT = st.one_of(
    st.builds(lambda k: selectors.Requirement(k, selectors.Operator.EXISTS), _WORDS),
    st.builds(lambda k: selectors.Requirement(k, selectors.Operator.NOT_EXISTS), _WORDS),
    st.builds(
        lambda k, v, op: selectors.Requirement(k, op, (v,)),
        _WORDS,
        _WORDS,
        st.sampled_from([selectors.Operator.EQUALS, selectors.Operator.NOT_EQUALS]),
    ),
    st.builds(
        lambda k, vs, op: selectors.Requirement(k, op, tuple(vs)),
        _WORDS,
        st.lists(_WORDS, min_size=1, max_size=3),
        st.sampled_from([selectors.Operator.IN, selectors.Operator.NOT_IN]),
    ),
)


@given(st.lists(_REQUIREMENT, min_size=1, max_size=4))
def test_a_selector_printed_parses_back_to_itself(
    requirements: list[selectors.Requirement],
) -> None:
    selector = selectors.Selector(tuple(requirements))
    assert selectors.parse(str(selector)) == selector
