"""The tokens a provider counted (``usage``), found in its reply without parsing the reply whole.

A JSON reply carries ``usage`` near its end; a stream carries it in its last event, and only
when the request asked for it with ``stream_options: {"include_usage": true}`` (PROTOCOLS C.1,
D.4), which the gateway adds to every streamed request (`inbound.Call.body_for`) so that tokens
can be counted; the event that holds nothing but the usage (``"choices":[]``) is then dropped
from the client's stream unless the client asked for it too (`only_usage`). Embeddings count
prompt tokens alone. Called by `relaying` for each reply; pure.

Why not ``json.loads`` of every reply: an embeddings reply can be megabytes of numbers, and a
stream is hundreds of events; the gateway looks for the word ``"usage"`` and decodes only the
object that follows it.
"""

from __future__ import annotations

import json

from gateway import prices

_WORD = b'"usage"'
_DECODER = json.JSONDecoder()
TAIL_BYTES = 4096  # how much of a JSON reply's end is kept to find its usage


def found(data: bytes) -> prices.Usage | None:
    """The last ``usage`` object in ``data`` (a JSON reply's end, or one SSE event), or None
    when there is none, it is ``null``, or it counts no tokens."""
    at = data.rfind(_WORD)
    if at < 0:
        return None
    text = data[at + len(_WORD) :].decode("utf-8", "replace").lstrip()
    if not text.startswith(":"):
        return None
    text = text[1:].lstrip()
    if not text.startswith("{"):
        return None
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return None
    prompt = _count(value.get("prompt_tokens"))
    completion = _count(value.get("completion_tokens"))
    if prompt is None or (prompt == 0 and not completion):
        return None
    return prices.Usage(prompt, completion or 0)


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def only_usage(event: bytes) -> bool:
    """Whether an SSE event is the usage-only chunk that ends a stream (``"choices":[]``)."""
    return _WORD in event and (b'"choices":[]' in event or b'"choices": []' in event)
