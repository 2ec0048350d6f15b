"""Redaction: masking a credential, and any long piece of it, out of text a backend wrote.

Providers echo the key they were sent in their error replies, in whole or in part (OpenAI's
401 says ``Incorrect API key provided: sk-proj-****abcd``; proxies repeat the header). Text
like that must not reach the status row, a log, NATS or the CLI, so whoever holds the key it
sent masks the text first: the adapters' boundary (`backends.failures.guard`) and, as a second
line, the backend cycle before it records an error.

`mask()` replaces the whole key and every run of the text that is a prefix or a suffix of the
key at least `MIN_FRAGMENT` characters long, in the key's raw, URL-encoded and JSON-escaped
forms, with `MASK`. Shorter fragments carry too little of a random key to matter and would
mask ordinary words. Pure: no I/O, nothing logged; it never returns the key.
"""

from __future__ import annotations

import json
import urllib.parse

MASK = "****"
MIN_FRAGMENT = 8


def mask(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` and its long prefixes and suffixes replaced by `MASK`.

    Unchanged (the same object) when there is no secret or nothing of it appears.
    """
    if not secret or not text:
        return text
    spans: list[tuple[int, int]] = []
    for form in forms(secret):
        spans += fragments(text, form)
    if not spans:
        return text
    return _replace(text, spans)


def forms(secret: str) -> tuple[str, ...]:
    """The ways a key shows up in text: as is, URL-encoded (a query string or a URL echoed
    back), and JSON-escaped (a body echoed back undecoded), without repeats."""
    found = [
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
    ]
    return tuple(dict.fromkeys(f for f in found if f))


def fragments(text: str, key: str) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` of ``text`` that are a prefix or a suffix of ``key`` at least
    `MIN_FRAGMENT` characters long (the whole key when it is shorter); maximal, may overlap."""
    shortest = min(MIN_FRAGMENT, len(key))
    spans = []
    head = key[:shortest]
    start = text.find(head)
    while start != -1:
        spans.append((start, start + _common_prefix(text, start, key)))
        start = text.find(head, start + 1)
    tail = key[-shortest:]
    at = text.find(tail)
    while at != -1:
        end = at + shortest
        spans.append((end - _common_suffix(text, end, key), end))
        at = text.find(tail, at + 1)
    return spans


def _common_prefix(text: str, start: int, key: str) -> int:
    length = 0
    limit = min(len(key), len(text) - start)
    while length < limit and text[start + length] == key[length]:
        length += 1
    return length


def _common_suffix(text: str, end: int, key: str) -> int:
    length = 0
    limit = min(len(key), end)
    while length < limit and text[end - 1 - length] == key[-1 - length]:
        length += 1
    return length


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """Replace each run of overlapping or touching spans by one `MASK`."""
    parts: list[str] = []
    kept_to = 0
    run_start, run_end = -1, -1
    for start, end in sorted(spans):
        if start <= run_end:
            run_end = max(run_end, end)
            continue
        if run_end >= 0:
            parts += [text[kept_to:run_start], MASK]
            kept_to = run_end
        run_start, run_end = start, end
    parts += [text[kept_to:run_start], MASK, text[run_end:]]
    return "".join(parts)
