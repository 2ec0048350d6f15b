"""Resolver invariants, as hypothesis properties: sticky stability, round-robin fairness, and
that a cooling-down provider is never chosen while another qualifies."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtimestate import resolver
from runtimestate.resolver import cooldown
from tests.unit.test_resolver import Clock, backend, fleet, make, model

Policy = resolver.Policy
BACKENDS = st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), min_size=2, max_size=8, unique=True
)
SESSIONS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True)


@settings(max_examples=60, deadline=None)
@given(backends=BACKENDS, sessions=SESSIONS, data=st.data())
def test_sticky_moves_only_the_sessions_of_a_backend_that_left(
    backends: list[str], sessions: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(backends))
    before = make(fleet(*(backend(b, model("m:1b")) for b in backends)))
    after = make(fleet(*(backend(b, model("m:1b")) for b in backends if b != gone)))
    for key in sessions:
        request = resolver.Request(models=("m:1b",), policy=Policy.STICKY, session=key)
        was = before.resolve(request).provider.backend
        now = after.resolve(request).provider.backend
        if was != gone:
            assert now == was


@settings(max_examples=40, deadline=None)
@given(
    backends=BACKENDS,
    rounds=st.integers(1, 20),
    contexts=st.lists(st.sampled_from([2048, 8192]), min_size=8, max_size=8),
)
def test_round_robin_gives_every_provider_the_same_share(
    backends: list[str], rounds: int, contexts: list[int]
) -> None:
    r = make(fleet(*(backend(b, model("m:1b", contexts[i])) for i, b in enumerate(backends))))
    request = resolver.Request(models=("m:1b",), policy=Policy.ROUND_ROBIN)
    counts = dict.fromkeys(backends, 0)
    for _ in range(rounds * len(backends)):
        counts[r.resolve(request).provider.backend] += 1
    assert set(counts.values()) == {rounds}


@settings(max_examples=80, deadline=None)
@given(
    backends=BACKENDS,
    policy=st.sampled_from(list(Policy)),
    events=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.floats(0, 40)), max_size=40),
)
def test_a_cooling_provider_is_never_chosen_while_another_qualifies(
    backends: list[str], policy: Policy, events: list[tuple[int, bool, float]]
) -> None:
    clock = Clock()
    r = make(fleet(*(backend(b, model("m:1b")) for b in backends)), clock)
    request = resolver.Request(models=("m:1b",), policy=policy, session="s")
    providers = list(r.resolve(request).providers())
    for which, ok, wait in events:
        r.record_outcome(providers[which % len(providers)], ok=ok, latency_s=0.1)
        clock.advance(wait)
        gates = {p.key: r.outcomes.gate(p.key, clock()) for p in providers}
        routable = [
            k for k, g in gates.items() if g in (cooldown.Gate.CLOSED, cooldown.Gate.TRIAL_DUE)
        ]
        if not routable:
            continue
        chosen = r.resolve(request)
        assert gates[chosen.provider.key] in (cooldown.Gate.CLOSED, cooldown.Gate.TRIAL_DUE)
        assert chosen.trial == (gates[chosen.provider.key] is cooldown.Gate.TRIAL_DUE)
        for fallback in chosen.fallbacks:
            assert gates[fallback.key] is cooldown.Gate.CLOSED
