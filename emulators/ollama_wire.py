"""Ollama wire details shared by the emulator's handlers: bodies, errors, model entries.

Error bodies are `{"error": "<message>"}` with `application/json; charset=utf-8`; an empty POST
or DELETE body is `400 missing request body` (PROTOCOLS §1.1). Entries for `/api/tags` and
`/api/ps` carry both `name` and `model` as the shortest display name and a bare hex digest.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from emulators import names, ollama_node, server, timestamps


class BadRequest(Exception):
    """A request the emulated server answers with an error; `response` is that answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.response = error(status, message)


def error(status: int, message: str) -> web.Response:
    """`{"error": message}` with `status`."""
    return server.json_response({"error": message}, status=status)


async def body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a POST or DELETE; raises BadRequest as Ollama answers."""
    raw = await request.read()
    if not raw:
        raise BadRequest(400, "missing request body")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(400, _decode_message(exc)) from exc
    if not isinstance(data, dict):
        raise BadRequest(400, "json: cannot unmarshal array into Go value of type api.Request")
    return data


def _decode_message(exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc):
        return "unexpected EOF"
    return f"invalid character {exc.doc[exc.pos]!r} looking for beginning of value"


def model_field(data: dict[str, Any]) -> str:
    """`model`, falling back to the deprecated `name` (`model` wins)."""
    value = data.get("model") or data.get("name") or ""
    return str(value)


def parse_name(text: str, message: str = "invalid model name") -> names.ModelName:
    """Parse or raise BadRequest(400, message)."""
    try:
        return names.parse(text)
    except names.InvalidNameError as exc:
        raise BadRequest(400, message) from exc


def tags_entry(model: ollama_node.Installed) -> dict[str, Any]:
    """One `/api/tags` entry (server v0.30 layout, with context length and capabilities)."""
    spec = model.spec
    details = spec.details()
    details["context_length"] = spec.context_length
    details["embedding_length"] = spec.embedding_length
    return {
        "name": spec.name,
        "model": spec.name,
        "modified_at": timestamps.rfc3339_nano(model.modified_ns),
        "size": spec.size,
        "digest": spec.digest,
        "details": details,
        "capabilities": list(spec.capabilities),
    }


def tags_body(node: ollama_node.OllamaNode) -> bytes:
    """The `/api/tags` body, newest first. The node keeps the encoded list and rebuilds it only
    when its installed models changed (compared by spec and manifest time, so tests that edit
    `installed` directly are seen too): the bytes are the same either way, and a 1,000-node
    emulator then spends its CPU on HTTP rather than on re-encoding identical lists."""
    models = sorted(node.installed.values(), key=lambda m: -m.modified_ns)
    key = tuple((m.spec, m.modified_ns) for m in models)
    if node.listed is None or node.listed[0] != key:
        listing = {"models": [tags_entry(m) for m in models]}
        node.listed = (key, json.dumps(listing, separators=(",", ":")).encode())
    return node.listed[1]


def ps_entry(node: ollama_node.OllamaNode, model: ollama_node.Loaded) -> dict[str, Any]:
    """One `/api/ps` entry: fully on GPU (`size_vram` = `size`)."""
    spec = model.spec
    return {
        "name": spec.name,
        "model": spec.name,
        "size": spec.size,
        "digest": spec.digest,
        "details": spec.details(),
        "expires_at": node.expires_at(model),
        "size_vram": spec.size,
        "context_length": model.context_length,
    }


def created_at(node: ollama_node.OllamaNode) -> str:
    """Generate/chat `created_at`: UTC with `Z`."""
    return timestamps.rfc3339_nano(node.clock(), utc=True)
