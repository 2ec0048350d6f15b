"""Finding a provider's usage in a reply's tail or an SSE event."""

from __future__ import annotations

import json

import pytest

from gateway import prices, usage


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"id":"x","usage":{"prompt_tokens":5,"completion_tokens":7}}', prices.Usage(5, 7)),
        (b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}}', prices.Usage(4, 0)),
        (b'{"data":[],"usage" : {"completion_tokens":2,"prompt_tokens":3}}', prices.Usage(3, 2)),
        (b'data: {"choices":[],"usage":null}', None),
        (b'{"usage":{"prompt_tokens":0,"completion_tokens":0}}', None),
        (b'{"usage":{"prompt_tokens":"5","completion_tokens":1}}', None),
        (b'{"usage":{"prompt_tokens":-1}}', None),
        (b'{"usage":{"prompt_tokens":3', None),  # cut short
        (b'{"text":"no counts here"}', None),
        (b'{"usage":"usage"}', None),
    ],
)
def test_the_last_usage_object_is_found_or_none(data: bytes, expected: object) -> None:
    assert usage.found(data) == expected


def test_a_usage_far_behind_megabytes_of_numbers_is_found_in_the_tail() -> None:
    body = json.dumps(
        {"data": [{"embedding": [0.125] * 200_000}], "usage": {"prompt_tokens": 9}}
    ).encode()
    assert usage.found(body[-usage.TAIL_BYTES :]) == prices.Usage(9, 0)


def test_only_the_usage_only_event_is_the_one_to_drop() -> None:
    final = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'
    spaced = b'data: {"choices": [], "usage": {"prompt_tokens": 1}}'
    content = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}'
    assert usage.only_usage(final)
    assert usage.only_usage(spaced)
    assert not usage.only_usage(content)
    assert not usage.only_usage(b'data: {"choices":[]}')
