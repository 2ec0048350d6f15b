"""Ollama's listing replies read into observed models: `/api/tags`, `/api/ps`, `/api/show`.

Called by the Ollama adapter (`backends.ollama`) once it has the bodies: the listings are
parsed into the official client's `ListResponse`/`ProcessResponse` exactly as its `list()` and
`ps()` parse them, and each listed model becomes a `base.ObservedModel`, with the facts
`/api/show` gave for its digest. Pure: no I/O, no cache of its own beyond interned values.
A reply that is not what Ollama sends raises `transport.MalformedReply` (or the client's
pydantic `ValidationError`); the adapter's guard maps both to `errors.ProtocolError`.
It must not decide anything or canonicalise names: Ollama's display names are kept as they are.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import ollama

from runtimestate.backends import base, showcache, transport


def listed(response: httpx.Response) -> Sequence[ollama.ListResponse.Model]:
    """The models of an `/api/tags` reply, parsed as `AsyncClient.list()` parses them."""
    return ollama.ListResponse(**_reply(response, "/api/tags")).models


Running = Mapping[str, ollama.ProcessResponse.Model]


def loaded(response: httpx.Response) -> Running:
    """The models an `/api/ps` reply says are loaded, by every key (digest, model, name),
    parsed as `AsyncClient.ps()` parses it."""
    running = ollama.ProcessResponse(**_reply(response, "/api/ps")).models
    keys: dict[str, ollama.ProcessResponse.Model] = {}
    for model in running:
        for key in (model.digest, model.model, model.name):
            if key:
                keys.setdefault(key, model)
    return keys


# An `/api/ps` expiry: `"expires_at":"2318-01-02T...` (any spacing); the year is group 1.
_EXPIRY = re.compile(rb'("expires_at"\s*:\s*")(\d{4,})-[^"]*"')
FOREVER_YEARS = 100  # an expiry this far ahead is "kept forever" (a negative keep_alive)


def residency_key(content: bytes, year: int) -> bytes:
    """A digest of an `/api/ps` body that stays the same while only the expiries of models
    kept forever move. Ollama renders a negative keep_alive as now plus about 292 years,
    new in every reply, so a warm model would otherwise make every observation new: the
    backend cycle would rebuild and rewrite that backend's state each cycle. An expiry more
    than `FOREVER_YEARS` after `year` (the current year) counts as "forever"."""

    def forever(match: re.Match[bytes]) -> bytes:
        far = int(match.group(2)) > year + FOREVER_YEARS
        return match.group(1) + b'forever"' if far else match.group(0)

    return hashlib.blake2b(_EXPIRY.sub(forever, content), digest_size=16).digest()


def facts_from_show(
    model_info: Mapping[str, Any], capabilities: Sequence[str] | None
) -> showcache.ShowFacts:
    """Context length from ``<general.architecture>.context_length``; capabilities as sent,
    or, for servers older than v0.6.4, derived the way Ollama does (pooling -> embedding)."""
    arch = model_info.get("general.architecture")
    context = model_info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    if capabilities is None:
        pooling = any(key.endswith(".pooling_type") for key in model_info)
        capabilities = ["embedding"] if pooling else ["completion"]
    return showcache.ShowFacts(
        context_length=transport.optional_int(context),
        backend_capabilities=frozenset(capabilities),
    )


def observed(
    model: ollama.ListResponse.Model,
    facts: Mapping[str, showcache.ShowFacts],
    loaded: Running,
) -> base.ObservedModel:
    """One listed model with the facts of its digest and whether `/api/ps` lists it."""
    if not model.model:
        raise transport.MalformedReply("a listed model has no name")
    found = facts.get(model.digest or "")
    raw = found.backend_capabilities if found else frozenset[str]()
    details = model.details
    running = loaded.get(model.model) or loaded.get(model.digest or "")
    # A fleet lists the same models on every node: names, digests, details and capability
    # sets are shared objects, so 1,000 nodes x 50 models cost 50 of each, not 50,000.
    name = sys.intern(model.model)
    return base.ObservedModel(
        name=name,
        model=name,
        digest=sys.intern(model.digest) if model.digest else None,
        size=None if model.size is None else int(model.size),
        modified_at=_shared_zone(model.modified_at),
        details=_details(
            details.family,
            details.parameter_size,
            details.quantization_level,
            details.format,
            tuple(details.families or ()),
            details.parent_model or None,
        )
        if details
        else _NO_DETAILS,
        context_length=found.context_length if found else None,
        capabilities=_capabilities(raw),
        backend_capabilities=raw,
        loaded=running is not None,
        size_vram=None if running is None or running.size_vram is None else int(running.size_vram),
        expires_at=None if running is None else _shared_zone(running.expires_at),
    )


def _reply(response: httpx.Response, what: str) -> Mapping[str, Any]:
    return transport.expect_mapping(transport.decode_json(response.content), f"{what} reply")


def _shared_zone(moment: dt.datetime | None) -> dt.datetime | None:
    """The same instant with a shared `datetime.timezone`: the parser gives every timestamp
    its own tzinfo object, 50,000 of them in a fleet, each one more object for the garbage
    collector to walk."""
    if moment is None or moment.tzinfo is None:
        return moment
    offset = moment.utcoffset()
    return moment if offset is None else moment.replace(tzinfo=_zone(offset))


_zone = functools.lru_cache(maxsize=64)(dt.timezone)
_NO_DETAILS = base.ModelDetails()
_details = functools.lru_cache(maxsize=4096)(base.ModelDetails)
_capabilities = functools.lru_cache(maxsize=256)(base.capabilities_from_ollama)
