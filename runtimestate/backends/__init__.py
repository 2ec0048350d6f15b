"""Backend adapters: one per backend type, behind the small Protocols of `base`.

`create()` is the one way the composition root builds an adapter from a backend's spec. Every
adapter owns one connection pool (close it with `aclose()` or ``async with``), enforces the
`base.Timeouts` it was given, caps reply sizes, and raises only `runtimestate.errors` classes.

Who calls it: the controller's composition root and the backend/download cycles. It must not
read settings, environment variables or the database: everything arrives as parameters.
"""

from __future__ import annotations

from typing import assert_never

import httpx

from runtimestate import errors
from runtimestate.backends import (
    base,
    gemini,
    node,
    ollama,
    openai,
    showcache,
    transport,
    vllm,
)
from runtimestate.desired import spec

Backend = (
    ollama.OllamaBackend
    | vllm.VllmBackend
    | openai.OpenAIBackend
    | gemini.GeminiBackend
    | node.NodeBackend
)

_HttpBackendClass = type[
    vllm.VllmBackend | openai.OpenAIBackend | gemini.GeminiBackend | node.NodeBackend
]

_CLASSES: dict[spec.BackendType, type[Backend]] = {
    spec.BackendType.OLLAMA: ollama.OllamaBackend,
    spec.BackendType.VLLM: vllm.VllmBackend,
    spec.BackendType.OPENAI: openai.OpenAIBackend,
    spec.BackendType.GEMINI: gemini.GeminiBackend,
    spec.BackendType.NODE: node.NodeBackend,
}


def capabilities(kind: spec.BackendType) -> base.Capabilities:
    """What an adapter of ``kind`` declares it can do (pull, delete, ...), without building one.

    The one answer to "which backend types can pull": the backend cycle hands it to the planner.
    """
    return _CLASSES[kind].capabilities


def create(
    type: str | spec.BackendType,  # the spec field is called type
    base_url: str,
    *,
    name: str | None = None,
    api_key: str | None = None,
    timeouts: base.Timeouts = base.Timeouts(),
    transport_: httpx.AsyncBaseTransport | None = None,
    show_cache: showcache.ShowCache | None = None,
    max_body_bytes: int = transport.DEFAULT_MAX_BODY_BYTES,
) -> Backend:
    """Build the adapter for `type` (case-insensitive). No I/O happens until it is used.

    `name` labels errors (default: host and path of `base_url`); `transport_` replaces the
    connection pool (tests pass an `httpx.MockTransport`); `show_cache` is shared between
    Ollama adapters. Raises `errors.ConfigurationError` for an unknown type or a bad URL.
    """
    try:
        kind = spec.BackendType(str(type).strip().lower())
    except ValueError:
        raise errors.ConfigurationError(f"unknown backend type {type!r}") from None
    match kind:
        case spec.BackendType.OLLAMA:
            return ollama.OllamaBackend(
                base_url,
                name=name,
                api_key=api_key,
                timeouts=timeouts,
                transport_=transport_,
                show_cache=show_cache,
                max_body_bytes=max_body_bytes,
            )
        case spec.BackendType.VLLM:
            cls: _HttpBackendClass = vllm.VllmBackend
        case spec.BackendType.OPENAI:
            cls = openai.OpenAIBackend
        case spec.BackendType.GEMINI:
            cls = gemini.GeminiBackend
        case spec.BackendType.NODE:
            cls = node.NodeBackend
        case _:
            assert_never(kind)
    return cls(
        base_url,
        name=name,
        api_key=api_key,
        timeouts=timeouts,
        transport_=transport_,
        max_body_bytes=max_body_bytes,
    )
