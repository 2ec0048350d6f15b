"""Names: validation and canonical forms of backend, pool and model names.

Called by the spec validation, the store, the planner and the adapters whenever two names
must be compared. Pure: no I/O.

Backend and pool names are DNS labels (they are also NATS subject tokens). Model names follow
Ollama's reference grammar, ``[host/][namespace/]model[:tag]``, where the tag defaults to
``latest``, the namespace to ``library`` and the host to ``registry.ollama.ai``, and parts are
compared case-insensitively. A vLLM served name, by contrast, is matched exactly as written.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import NewType

from runtimestate import echo

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_LABEL_HINT = "lower-case letters, digits and '-', 1 to 63 characters, e.g. gpu-1"

# A model name in the form it is compared in on one backend type; made only by `key`.
ModelKey = NewType("ModelKey", str)

OLLAMA = "ollama"  # `spec.BackendType.OLLAMA`, whose names follow the grammar below
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_MAX_PART = {"host": 350, "namespace": 80, "model": 80, "tag": 80}
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


class InvalidName(ValueError):
    """A name that does not follow the grammar it must follow; the message says why."""


def is_dns_label(name: str) -> bool:
    return bool(DNS_LABEL.match(name))


def check_dns_label(name: str, kind: str) -> str:
    """Return ``name`` if it is a DNS label, else raise `InvalidName` naming ``kind``."""
    if not is_dns_label(name):
        raise InvalidName(f"{kind} name {echo.quoted(name)} is not a DNS label ({DNS_LABEL_HINT})")
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class OllamaName:
    """A parsed Ollama model reference, with defaults filled in and parts lower-cased."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """The shortest display form, as Ollama shows it (``llama3:latest``)."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def _valid_part(kind: str, part: str) -> bool:
    if not 1 <= len(part) <= _MAX_PART[kind]:
        return False
    if not (part[0].isascii() and (part[0].isalnum() or part[0] == "_")):
        return False
    for char in part[1:]:
        if char in "_-":
            continue
        if char == ".":
            if kind == "namespace":
                return False
            continue
        if char == ":":
            if kind != "host":
                return False
            continue
        if not (char.isascii() and char.isalnum()):
            return False
    return True


@functools.lru_cache(maxsize=16384)  # pure, and a fleet repeats a few names on every backend
def parse_ollama(name: str) -> OllamaName:
    """Parse an Ollama model reference.

    Raises `InvalidName` with the offending part when the reference does not follow the
    grammar (the same rules as Ollama's ``types/model/name.go``).
    """
    if not name or _CONTROL_OR_SPACE.search(name):
        raise InvalidName(f"model name {echo.quoted(name)} is empty or contains whitespace")
    rest, tag = name, DEFAULT_TAG
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    parts = rest.split("/")
    if len(parts) > 3:
        raise InvalidName(
            f"model name {echo.quoted(name)} has more than host/namespace/model parts"
        )
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    for kind, part in (("host", host), ("namespace", namespace), ("model", model), ("tag", tag)):
        if not _valid_part(kind, part):
            raise InvalidName(
                f"model name {echo.quoted(name)} has an invalid {kind} {echo.quoted(part)} "
                "(letters, digits, '_', '-' and '.', starting with a letter or digit, "
                "e.g. llama3.2:1b or library/qwen2:0.5b)"
            )
    return OllamaName(host.lower(), namespace.lower(), model.lower(), tag.lower())


@functools.lru_cache(maxsize=16384)  # called per model per backend on every cycle
def key(name: str, backend_type: str) -> ModelKey:
    """The comparison key of ``name`` on a backend of ``backend_type`` (a `spec.BackendType`,
    or the same value as a snapshot stores it): the one place a `ModelKey` is made.

    Ollama names compare in Ollama's canonical form (``Llama3`` is ``llama3:latest``); every
    other type matches served names exactly. A name Ollama's grammar rejects is its own key,
    so it never matches a (valid, canonical) declared name. Declared models are Ollama
    references whatever the backend, so their identity is their key on ``ollama``. Never raises:
    validate with `parse_ollama` where a bad name must be refused.
    """
    if backend_type != OLLAMA:
        return ModelKey(name)
    try:
        return ModelKey(parse_ollama(name).short)
    except InvalidName:
        return ModelKey(name)
