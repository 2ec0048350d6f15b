"""Deterministic fake embedding vectors, shared by the Ollama and vLLM emulators.

The same text always gives the same unit-length vector, so tests can compare results across
runs and nodes. `encoded` applies OpenAI's `encoding_format`. Pure; not meant to carry any
meaning.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct


def vector(text: str, dimensions: int) -> list[float]:
    """A unit vector of `dimensions` floats derived from sha256 of `text`."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def encoded(values: list[float], encoding_format: str) -> list[float] | str:
    """`values` as OpenAI's `encoding_format` asks: the list (`float`) or base64 of
    little-endian float32 (`base64`). Raises ValueError for any other format."""
    if encoding_format == "float":
        return values
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    raise ValueError(f"unsupported encoding_format {encoding_format!r}: use float or base64")
