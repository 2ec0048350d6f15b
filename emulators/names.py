"""Ollama model names: parsing, defaults and the shortest display form.

A name is `[host/][namespace/]model[:tag]`; the tag defaults to `latest`, the namespace to
`library` and the host to `registry.ollama.ai` (PROTOCOLS §1.1). Responses show the shortest form
(`llama3.2:latest`, `myns/foo:latest`, `example.com/ns/foo:v1`) and lookups are case-insensitive.
Used by the Ollama emulator and its catalog; pure, no I/O.
"""

from __future__ import annotations

import dataclasses
import re

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]{0,349}$")


class InvalidNameError(ValueError):
    """The text is not a valid Ollama model name."""


@dataclasses.dataclass(frozen=True)
class ModelName:
    """A fully qualified model name; `display` is what responses show."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """Shortest form, as Ollama's `DisplayShortest`: default host and namespace dropped."""
        base = f"{self.model}:{self.tag}"
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{base}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{base}"
        return base

    @property
    def key(self) -> str:
        """Case-insensitive identity used to match installed and catalog models."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()


def parse(text: str) -> ModelName:
    """Parse and complete a model name.

    Raises InvalidNameError for empty names, too many path parts, a digest reference or
    characters Ollama rejects. A `https://` prefix is dropped; `http://` is handled by callers.
    """
    raw = text.strip()
    for scheme in ("https://", "http://"):
        if raw.startswith(scheme):
            raw = raw[len(scheme) :]
    if not raw or "@" in raw:
        raise InvalidNameError(text)
    path, tag = _split_tag(raw)
    parts = path.split("/")
    if len(parts) > 3:
        raise InvalidNameError(text)
    parts = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    host, namespace, model = parts
    if not (_HOST.match(host) and _PART.match(namespace) and _PART.match(model)):
        raise InvalidNameError(text)
    if not _PART.match(tag):
        raise InvalidNameError(text)
    return ModelName(host=host, namespace=namespace, model=model, tag=tag)


def is_valid(text: str) -> bool:
    """True when `parse(text)` would succeed."""
    try:
        parse(text)
    except InvalidNameError:
        return False
    return True


def _split_tag(raw: str) -> tuple[str, str]:
    slash = raw.rfind("/")
    colon = raw.rfind(":")
    if colon > slash:
        return raw[:colon], raw[colon + 1 :]
    return raw, DEFAULT_TAG
