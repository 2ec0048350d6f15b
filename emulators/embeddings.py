"""Deterministic fake embedding vectors, shared by the Ollama and vLLM emulators.

The same text always gives the same unit-length vector, so tests can compare results across
runs and nodes. Pure; not meant to carry any meaning.
"""

from __future__ import annotations

import hashlib
import math


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
