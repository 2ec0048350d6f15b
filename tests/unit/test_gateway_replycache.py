"""The gateway's reply cache (`gateway.replycache`) as pure logic, with a fake clock: what is
deterministic, the entry key, ``Cache-Control``, TTL, the byte bound and what is stored."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import replycache

CHAT = "chat/completions"
DOC = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
REPLY = b'{"id":"chatcmpl-1","choices":[]}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(**settings: Any) -> tuple[replycache.ReplyCache, Clock]:
    clock = Clock()
    return replycache.ReplyCache(replycache.Settings(**settings), clock), clock


@pytest.mark.parametrize(
    ("endpoint", "document", "expected"),
    [
        (CHAT, {"temperature": 0}, True),
        (CHAT, {"temperature": 0.0, "n": 3, "logprobs": True, "tools": []}, True),
        (CHAT, {"temperature": 1.2, "seed": 7}, True),
        ("completions", {"seed": 0}, True),
        ("embeddings", {"input": "a"}, True),
        (CHAT, {}, False),  # temperature absent: 1
        (CHAT, {"temperature": 0.3}, False),
        (CHAT, {"temperature": False}, False),
        (CHAT, {"temperature": "0"}, False),
        (CHAT, {"seed": None}, False),
        (CHAT, {"seed": True}, False),
        (CHAT, {"seed": 1.5}, False),
        (CHAT, {"temperature": 0, "stream": True}, False),
        (CHAT, {"temperature": 0, "store": True}, False),
        ("completions", {"seed": 3, "stream": True}, False),
    ],
)
def test_only_requests_whose_reply_cannot_differ_are_deterministic(
    endpoint: str, document: dict[str, Any], expected: bool
) -> None:
    assert replycache.deterministic(endpoint, document) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", (True, True)),
        ("max-age=60", (True, True)),
        ("no-cache", (False, True)),
        ("No-Cache, max-age=0", (False, True)),
        ("no-store", (False, False)),
        ("no-cache, no-store", (False, False)),
    ],
)
def test_cache_control_decides_reading_and_storing(
    header: str, expected: tuple[bool, bool]
) -> None:
    assert replycache.directives(header) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


def reordered(value: Any, rng: random.Random) -> Any:
    """``value`` with the keys of every object in it, nested ones too, in a random order."""
    if isinstance(value, list):
        return [reordered(item, rng) for item in value]
    if not isinstance(value, dict):
        return value
    items = [(key, reordered(item, rng)) for key, item in value.items()]
    rng.shuffle(items)
    return dict(items)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8), st.randoms())
def test_the_entry_key_does_not_depend_on_the_order_of_keys(
    document: dict[str, Any], rng: random.Random
) -> None:
    shuffled = reordered(document, rng)
    assert replycache.entry_key(CHAT, shuffled, "key:1") == replycache.entry_key(
        CHAT, document, "key:1"
    )


def test_the_entry_key_differs_by_scope_endpoint_and_any_parameter() -> None:
    key = replycache.entry_key(CHAT, DOC, "key:1")
    assert key != replycache.entry_key(CHAT, DOC, "key:2")
    assert key != replycache.entry_key("completions", DOC, "key:1")
    assert key != replycache.entry_key(CHAT, {**DOC, "user": "u1"}, "key:1")
    assert key != replycache.entry_key(CHAT, {**DOC, "messages": []}, "key:1")


def test_a_stored_reply_is_a_hit_for_its_scope_only_and_counted() -> None:
    c, _ = cache()
    miss = c.consult(CHAT, DOC, "key:1")
    assert (miss.state, miss.body, miss.keep_reply) == ("miss", None, 1024 * 1024)
    assert c.keep(miss, 200, REPLY)
    hit = c.consult(CHAT, DOC, "key:1")
    assert (hit.state, hit.body) == ("hit", REPLY)
    assert c.consult(CHAT, DOC, "key:2").state == "miss"
    assert (c.counts.hits, c.counts.misses, c.counts.stores) == (1, 2, 1)


def test_a_shared_cache_ignores_the_scope() -> None:
    c, _ = cache(shared=True)
    c.keep(c.consult(CHAT, DOC, "key:1"), 200, REPLY)
    assert c.consult(CHAT, DOC, "key:2").body == REPLY


def test_a_disabled_cache_or_a_non_deterministic_request_is_not_cached() -> None:
    off, _ = cache(ttl_s=0)
    assert off.consult(CHAT, DOC, "open") is replycache.NOT_CACHED
    on, _ = cache()
    assert on.consult(CHAT, {**DOC, "temperature": 1}, "open") is replycache.NOT_CACHED
    assert on.consult(CHAT, DOC, "open", "no-store") is replycache.NOT_CACHED
    assert (on.counts.hits, on.counts.misses) == (0, 0)


def test_an_entry_expires_ttl_after_it_was_stored_even_when_read() -> None:
    c, clock = cache(ttl_s=10)
    c.put(b"k", REPLY)
    clock.now += 9.9
    assert c.get(b"k") == REPLY
    clock.now += 0.1
    assert c.get(b"k") is None
    assert (len(c), c.size_bytes, c.counts.expired) == (0, 0, 1)


def test_only_whole_successful_json_replies_are_stored() -> None:
    c, _ = cache()
    miss = c.consult(CHAT, DOC, "open")
    assert not c.keep(miss, 400, b'{"error": {"message": "bad"}}')
    assert not c.keep(miss, 200, None)
    assert not c.keep(miss, 200, REPLY[:10])
    assert not c.keep(miss, 200, b'{"error": {"message": "overloaded"}}')
    assert not c.keep(miss, 200, b"[1, 2]")
    assert not c.keep(replycache.NOT_CACHED, 200, REPLY)
    assert len(c) == 0
    assert c.keep(miss, 200, REPLY)


def test_the_least_recently_used_entry_is_evicted_for_room() -> None:
    one = 1 + 100 + replycache.ENTRY_OVERHEAD_BYTES
    c, _ = cache(max_bytes=2 * one, max_entry_bytes=100)
    assert c.put(b"a", b"x" * 100)
    assert c.put(b"b", b"x" * 100)
    assert c.get(b"a") is not None  # now b is the least recently used
    assert c.put(b"c", b"x" * 100)
    assert (c.get(b"a") is not None, c.get(b"b"), c.get(b"c") is not None) == (True, None, True)
    assert (c.size_bytes, c.counts.evictions) == (2 * one, 1)
    assert not c.put(b"d", b"x" * 101)
    assert c.counts.too_large == 1


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 300)), max_size=60))
def test_the_entries_never_take_more_than_the_byte_bound(puts: list[tuple[int, int]]) -> None:
    c, _ = cache(max_bytes=1000, max_entry_bytes=400)
    for name, size in puts:
        c.put(bytes([name]), b"x" * size)
        assert c.size_bytes <= 1000
        assert c.size_bytes == sum(
            1 + len(body) + replycache.ENTRY_OVERHEAD_BYTES
            for body in (c.get(bytes([n])) for n in range(21))
            if body is not None
        )
