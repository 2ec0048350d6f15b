"""The desired state as domain values: backend, model and pool specs, and their validation.

Called by the CLI, the manifest (apply/export) and the store before anything is written, so a
bad value is refused with a message naming the field and what would be valid. Pure: no I/O.
Stored objects wrap a spec with the identity, generation and timestamps the store assigns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NewType, TypeVar

from runtimestate import echo
from runtimestate.desired import engineargs, names, updatepolicy

if TYPE_CHECKING:
    from runtimestate.credentials import Credentials

BackendId = NewType("BackendId", int)
ModelId = NewType("ModelId", int)
PoolId = NewType("PoolId", int)

DEFAULT_POOL = "default"
MAX_PULLS_LIMIT = 64
MAX_CONTEXT_LENGTH = 100_000_000

LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?)?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHOLE_NUMBER = re.compile(r"^[0-9]+$")

_E = TypeVar("_E", bound=enum.StrEnum)


class SpecError(ValueError):
    """A spec value that is not valid; ``field`` names it and the message says what is."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class BackendType(enum.StrEnum):
    OLLAMA = "ollama"
    VLLM = "vllm"
    OPENAI = "openai"
    GEMINI = "gemini"
    NODE = "node"


class PrunePolicy(enum.StrEnum):
    NONE = "none"
    MANAGED = "managed"
    ALL = "all"


class Capability(enum.StrEnum):
    CHAT = "chat"
    EMBED = "embed"
    PROMPT = "prompt"
    STREAM = "stream"


@dataclasses.dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str
    type: BackendType
    url: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    prune: PrunePolicy = PrunePolicy.MANAGED
    max_pulls: int = 1
    credentials: Credentials | None = None
    vram_bytes: int | None = None  # the memory warm models may hold (Ollama's size_vram)
    disk_bytes: int | None = None  # the disk pulls are admitted against; None: not declared


@dataclasses.dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    context_length: int | None = None
    capabilities: tuple[Capability, ...] | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    vllm: engineargs.VllmArgs | None = None  # how a node agent starts it (`engineargs`)
    warm: bool = False  # kept loaded on the Ollama backends placing it
    keep_alive: str | None = None  # Ollama's keep_alive for a warm model ("-1": forever)
    update: updatepolicy.Rollout = updatepolicy.DEFAULT  # upstream upgrades (issue 19)


@dataclasses.dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    purpose: str = ""
    backends: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    adapters: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AdapterSpec:
    """A LoRA adapter: loaded under `name` where a pool places it and `base_model` is served.
    `source` is a path on the node or a Hugging Face repo id (`revision`: its branch, tag or
    commit)."""

    name: str
    base_model: str
    source: str
    revision: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Meta:
    """What the store adds to a spec: identity, generation and timestamps."""

    id: int
    generation: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    spec: BackendSpec
    meta: Meta

    @property
    def name(self) -> str:
        return self.spec.name


@dataclasses.dataclass(frozen=True, slots=True)
class Model:
    spec: ModelSpec
    meta: Meta

    @property
    def name(self) -> str:
        return self.spec.name


@dataclasses.dataclass(frozen=True, slots=True)
class Adapter:
    spec: AdapterSpec
    meta: Meta

    @property
    def name(self) -> str:
        return self.spec.name


@dataclasses.dataclass(frozen=True, slots=True)
class Pool:
    spec: PoolSpec
    meta: Meta

    @property
    def name(self) -> str:
        return self.spec.name


def _enum_value(kind: type[_E], field: str, value: str) -> _E:
    try:
        return kind(value.strip().lower())
    except ValueError:
        valid = "|".join(member.value for member in kind)
        raise SpecError(field, f"{echo.quoted(value)} is not one of {valid}") from None


def backend_type(value: str) -> BackendType:
    return _enum_value(BackendType, "type", value)


def prune_policy(value: str) -> PrunePolicy:
    return _enum_value(PrunePolicy, "prune", value)


def capability(value: str) -> Capability:
    return _enum_value(Capability, "capabilities", value)


def dns_name(value: str, kind: str) -> str:
    try:
        return names.check_dns_label(value, kind)
    except names.InvalidName as exc:
        raise SpecError("name", str(exc)) from None


def model_name(value: str) -> str:
    """Validate a declared model name; return it as declared (not canonicalised)."""
    try:
        names.parse_ollama(value)
    except names.InvalidName as exc:
        raise SpecError("name", str(exc)) from None
    return value


def base_url(value: str) -> str:
    """Validate an http(s) base URL, which may carry a path prefix; drop a trailing slash.

    The one set of URL rules: the spec applies them to what users declare, and the adapters
    (`runtimestate.backends.httpapi.validate_base_url`) to what they are built with. Raises
    `SpecError`, whose message never shows a user, password, query or fragment (keys hide there).
    """
    parsed = urllib.parse.urlsplit(value.strip())
    shown = echo.quoted(_shown(parsed))
    hint = "give an http:// or https:// URL such as http://10.0.0.5:11434"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SpecError("url", f"{shown} is not an http or https URL; {hint}")
    try:
        parsed.port  # noqa: B018 - urlsplit raises on a port that is not a number or too large
    except ValueError:
        raise SpecError("url", f"{shown} has an invalid port; {hint}") from None
    if "@" in parsed.netloc:
        raise SpecError("url", "must not carry a user or password; use --api-key-env instead")
    if parsed.query or parsed.fragment:
        raise SpecError("url", f"{shown} must not have a query or fragment; {hint}")
    return urllib.parse.urlunsplit(parsed._replace(path=parsed.path.rstrip("/")))


def _shown(parsed: urllib.parse.SplitResult) -> str:
    """A URL as an error may quote it: without user, password, query and fragment."""
    host = parsed.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))


def api_url(kind: BackendType, url: str) -> str:
    """The stored form of a validated base URL, so both forms users copy work for ``kind``.

    vLLM: the server root, without a trailing ``/v1`` (the adapter adds ``/v1/models``, and
    ``/health``, ``/version`` and ``/metrics`` live at the root); a node agent's root the same
    way (its API is ``/v1/...`` under it). OpenAI-compatible: the API
    root with its version, as OpenAI SDKs take it (the adapter lists ``{url}/models``), so a
    bare host gains ``/v1``. Any other path prefix is kept; other types are left alone (the
    Gemini adapter reads both ``host`` and ``host/v1beta``). Pure and idempotent.
    """
    parsed = urllib.parse.urlsplit(url)
    path = parsed.path.rstrip("/")
    if kind in (BackendType.VLLM, BackendType.NODE) and path.endswith("/v1"):
        path = path.removesuffix("/v1")
    elif kind is BackendType.OPENAI and not path:
        path = "/v1"
    return urllib.parse.urlunsplit(parsed._replace(path=path))


def labels(pairs: Mapping[str, str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in pairs.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise SpecError(
                "labels", f"key {echo.quoted(key)} is not a valid label key (e.g. zone)"
            )
        if not isinstance(value, str) or not LABEL_VALUE.match(value):
            raise SpecError(
                "labels",
                f"value {echo.quoted(value)} of {echo.quoted(key)} "
                "is not a valid label value (e.g. eu-1)",
            )
        result[key] = value
    return dict(sorted(result.items()))


def parse_label(text: str) -> tuple[str, str]:
    """Parse one ``k=v`` command-line label."""
    key, sep, value = text.partition("=")
    if not sep:
        raise SpecError("labels", f"{echo.quoted(text)} is not of the form key=value (e.g. zone=a)")
    return key, value


def parse_whole_number(text: str | int) -> int:
    """Parse a command-line count: ASCII digits only (``int`` would take ``1_0`` and ``+2``)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text  # a default, already a number
    if not isinstance(text, str) or not _WHOLE_NUMBER.match(text):
        raise ValueError(f"{echo.quoted(text)} is not a whole number (digits only, e.g. 2)")
    if len(text) > 18:
        raise ValueError(f"{echo.quoted(text)} is too large")
    return int(text)


def max_pulls(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PULLS_LIMIT:
        raise SpecError(
            "maxPulls", f"{echo.quoted(value)} must be a whole number from 1 to {MAX_PULLS_LIMIT}"
        )
    return value


def context_length(value: int | None) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_CONTEXT_LENGTH
    ):
        raise SpecError(
            "contextLength", f"{echo.quoted(value)} must be a positive whole number of tokens"
        )
    return value


def vllm_args(value: engineargs.VllmArgs | None) -> engineargs.VllmArgs | None:
    """Validate a model's engine arguments; the first problem names ``vllm.<key>``."""
    if value is None:
        return None
    found = engineargs.problems(value)
    if found:
        key, message = found[0]
        raise SpecError(f"vllm.{key}", message)
    utilization = value.gpu_memory_utilization
    fraction = None if utilization is None else float(utilization)
    return dataclasses.replace(value, gpu_memory_utilization=fraction)


def capabilities(values: Iterable[str] | None) -> tuple[Capability, ...] | None:
    if values is None:
        return None
    return tuple(sorted({capability(value) for value in values}))


def env_var(value: str) -> str:
    if not _ENV_VAR.match(value):
        raise SpecError(
            "credentials",
            f"{echo.quoted(value)} is not an environment variable name (e.g. OPENAI_API_KEY)",
        )
    return value


def purpose(value: str) -> str:
    if _CONTROL.search(value) or len(value) > 1000:
        raise SpecError("purpose", "must be printable text of at most 1000 characters")
    return value


def validate_backend(spec: BackendSpec) -> BackendSpec:
    """Return ``spec`` with every field validated and normalised; raises `SpecError`."""
    kind = backend_type(spec.type)
    return dataclasses.replace(
        spec,
        name=dns_name(spec.name, "backend"),
        type=kind,
        url=api_url(kind, base_url(spec.url)),
        labels=labels(spec.labels),
        prune=prune_policy(spec.prune),
        max_pulls=max_pulls(spec.max_pulls),
    )


def validate_model(spec: ModelSpec) -> ModelSpec:
    return dataclasses.replace(
        spec,
        name=model_name(spec.name),
        context_length=context_length(spec.context_length),
        capabilities=capabilities(spec.capabilities),
        labels=labels(spec.labels),
        vllm=vllm_args(spec.vllm),
    )


def validate_pool(spec: PoolSpec) -> PoolSpec:
    for backend in spec.backends:
        dns_name(backend, "backend")
    for model in spec.models:
        model_name(model)
    return dataclasses.replace(
        spec,
        name=dns_name(spec.name, "pool"),
        purpose=purpose(spec.purpose),
        backends=tuple(sorted(set(spec.backends))),
        models=tuple(sorted(set(spec.models))),
        labels=labels(spec.labels),
    )


def make_backend(
    name: str,
    type: str,
    url: str,
    *,
    labels: Mapping[str, str] | None = None,
    prune: str = "managed",
    max_pulls: int = 1,
    credentials: Credentials | None = None,
) -> BackendSpec:
    """A validated backend spec from plain values (as the CLI and files give them)."""
    value = BackendSpec(
        name, backend_type(type), url, labels or {}, prune_policy(prune), max_pulls, credentials
    )
    return validate_backend(value)
