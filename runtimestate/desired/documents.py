"""Documents of a declarative file: each one checked field by field and turned into a spec.

Called by `runtimestate.desired.manifest` for every YAML document of a file. A document is checked
whole: its shape, the type of every field (a boolean, ``"2"`` or ``2.0`` is not a whole number)
and every value, so one run lists every problem it has. Problems name the field as written in
the file (``spec.maxPulls``) and never an internal class; values are echoed cut
(`runtimestate.echo`). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from runtimestate import credentials, echo
from runtimestate.desired import engineargs, names, residency, spec, updatepolicy

API_VERSION = "llmctl/v1"
KINDS = ("Backend", "Model", "Pool", "Adapter")
_T = TypeVar("_T")

Spec = spec.BackendSpec | spec.ModelSpec | spec.PoolSpec | spec.AdapterSpec


class _Required:
    """The default of a field that has none."""


_REQUIRED = _Required()
_NOUNS = {str: "a string", int: "a whole number", bool: "true or false", list: "a list",
          dict: "a mapping (key: value)"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Document:
    """One document of a file: what it declares, its spec if valid, and its problems.

    ``problems`` are ``field: message`` lines; ``value`` is None when there is any.
    ``members`` are a pool's well-formed member names, as (``backend``|``model``|``adapter``,
    name), and an adapter's base model, as (``model``, name).
    """

    index: int
    kind: str | None
    name: str | None
    value: Spec | None
    problems: tuple[str, ...]
    members: tuple[tuple[str, str], ...] = ()

    @property
    def title(self) -> str:
        """``document 3 (Backend gpu-1)``, as far as the document says what it is."""
        if self.kind is None:
            return f"document {self.index}"
        return f"document {self.index} ({self.kind} {echo.plain(self.name or '?')})"


def describe(value: object) -> str:
    """What a value of the wrong type is, for a message: ``'2' (a string)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, float):
        return f"{echo.quoted(value)} (a decimal number)"
    if isinstance(value, (dict, list)):
        return _NOUNS[type(value)] if type(value) in _NOUNS else type(value).__name__
    noun = _NOUNS.get(type(value), f"a {type(value).__name__}")
    return f"{echo.quoted(value)} ({noun})"


class _Fields:
    """Reads typed fields of one mapping and collects a problem for each bad one."""

    def __init__(self, body: Mapping[Any, Any], path: str, problems: list[str]) -> None:
        self.body, self.path, self.problems = body, path, problems

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, kind: type[_T], default: _T | _Required | None = _REQUIRED) -> Any:
        """The value of ``key`` if it has type ``kind``; else the problem, and None."""
        if key not in self.body:
            if isinstance(default, _Required):
                self.problems.append(f"{self.where(key)}: is required")
                return None
            return default
        value = self.body[key]
        if value is None and default is None:
            return None
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            self.problems.append(
                f"{self.where(key)}: must be {_NOUNS[kind]}, not {describe(value)}"
            )
            return None
        return value

    def strings(self, key: str) -> list[tuple[int, str]] | None:
        """A list of strings, as (index, string); an element of another type is a problem."""
        values = self.take(key, list, None)
        if values is None:
            return None
        for i, v in enumerate(values):
            if not isinstance(v, str):
                self.problems.append(f"{self.where(key)}[{i}]: must be a string, not {describe(v)}")
        return [(i, v) for i, v in enumerate(values) if isinstance(v, str)]

    def check(self, key: str, value: Any, validate: Callable[[Any], _T]) -> _T | None:
        """``validate(value)`` unless it is None; a `SpecError` becomes a problem of ``key``."""
        if value is None:
            return None
        try:
            return validate(value)
        except (spec.SpecError, names.InvalidName) as exc:
            message = exc.message if isinstance(exc, spec.SpecError) else str(exc)
            self.problems.append(f"{self.where(key)}: {message}")
            return None

    def unknown(self, known: tuple[str, ...], what: str) -> None:
        """A problem for every key that is not one of ``known``."""
        for key in self.body:
            if key not in known:
                self.problems.append(
                    f"{self.where(echo.plain(str(key)))}: is not a field of {what} "
                    f"(known: {', '.join(known)})"
                )


def read(index: int, raw: object) -> Document:
    """Check document ``index`` (from 1) of a file, as YAML loaded it; never raises."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        problems.append(
            f"must be a mapping with apiVersion, kind, metadata and spec, not {describe(raw)}"
        )
        return Document(index, None, None, None, tuple(problems))
    kind, meta, body = _envelope(_Fields(raw, "", problems))
    name = meta.take("name", str) if meta.body is not _ABSENT else None
    labels = meta.check("labels", meta.take("labels", dict, {}), spec.labels)
    value: Spec | None = None
    members: tuple[tuple[str, str], ...] = ()
    if kind == "Backend":
        value = _backend(name, labels, meta, body)
    elif kind == "Model":
        value = _model(name, labels, meta, body)
    elif kind == "Pool":
        value, members = _pool(name, labels, meta, body)
    elif kind == "Adapter":
        value = _adapter(name, labels, meta, body)
        members = () if value is None else (("model", value.base_model),)
    if kind is not None:
        body.unknown(_SPEC_FIELDS[kind], f"a {kind} spec")
    if value is not None and not problems:
        try:
            value = _VALIDATE[type(value)](value)
        except spec.SpecError as exc:  # every field was checked; this is a safety net
            problems.append(str(exc))
    return Document(index, kind, name, None if problems else value, tuple(problems), members)


_ABSENT: dict[str, Any] = {}
_SPEC_FIELDS = {
    "Backend": ("type", "url", "prune", "maxPulls", "credentials", "vramBytes", "diskBytes"),
    "Model": (
        "contextLength",
        "capabilities",
        "vllm",
        "warm",
        "keepAlive",
        "updatePolicy",
        "maxUnavailable",
    ),
    "Pool": ("purpose", "backends", "models", "adapters"),
    "Adapter": ("baseModel", "source", "revision"),
}
_VALIDATE: dict[type[Any], Callable[[Any], Spec]] = {
    spec.BackendSpec: residency.validate_backend,
    spec.ModelSpec: residency.validate_model,
    spec.PoolSpec: residency.validate_pool,
    spec.AdapterSpec: residency.validate_adapter,
}


def _envelope(top: _Fields) -> tuple[str | None, _Fields, _Fields]:
    """Check apiVersion, kind and the shape of metadata and spec."""
    top.unknown(("apiVersion", "kind", "metadata", "spec"), "a document")
    version = top.take("apiVersion", str)
    if version is not None and version != API_VERSION:
        top.problems.append(f"apiVersion: must be {API_VERSION}, not {echo.quoted(version)}")
    kind = top.take("kind", str)
    if kind is not None and kind not in KINDS:
        top.problems.append(f"kind: must be one of {'|'.join(KINDS)}, not {echo.quoted(kind)}")
        kind = None
    metadata = top.take("metadata", dict)
    meta = _Fields(_ABSENT if metadata is None else metadata, "metadata", top.problems)
    meta.unknown(("name", "labels"), "metadata")
    body = _Fields(top.take("spec", dict, {}) or {}, "spec", top.problems)
    return kind, meta, body


def _backend(
    name: str | None, labels: dict[str, str] | None, meta: _Fields, body: _Fields
) -> spec.BackendSpec | None:
    checked = meta.check("name", name, lambda v: spec.dns_name(v, "backend"))
    type_ = body.check("type", body.take("type", str), spec.backend_type)
    url = body.check("url", body.take("url", str), spec.base_url)
    prune = body.check("prune", body.take("prune", str, "managed"), spec.prune_policy)
    max_pulls = body.check("maxPulls", body.take("maxPulls", int, 1), spec.max_pulls)
    raw_creds = body.take("credentials", dict, None)
    creds = None
    if raw_creds is not None:
        creds = _credentials(_Fields(raw_creds, "spec.credentials", body.problems))
    vram, disk = _size(body, "vramBytes"), _size(body, "diskBytes")
    if checked is None or type_ is None or url is None or prune is None or max_pulls is None:
        return None
    value = spec.BackendSpec(checked, type_, url, labels or {}, prune, max_pulls, creds)
    return dataclasses.replace(value, vram_bytes=vram, disk_bytes=disk)


def _size(fields: _Fields, key: str) -> int | None:
    """Bytes, written as a whole number or a string with a unit (``24GiB``, ``20GB``)."""
    value = fields.body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        fields.problems.append(
            f"{fields.where(key)}: must be a size (bytes, or e.g. 24GiB), not {describe(value)}"
        )
        return None
    return fields.check(key, value, lambda v: residency.size(v, key))


def _credentials(creds: _Fields) -> credentials.Credentials | None:
    creds.unknown(("env", "encrypted"), "credentials")
    env = creds.take("env", str, None)
    encrypted = creds.take("encrypted", bool, None)
    if encrypted is False:
        creds.problems.append("spec.credentials.encrypted: must be true (or left out)")
    elif ("env" in creds.body) == ("encrypted" in creds.body):
        creds.problems.append("spec.credentials: give exactly one of env: VAR or encrypted: true")
    elif env is not None:
        var = creds.check("env", env, spec.env_var)
        return (
            None
            if var is None
            else credentials.Credentials(credentials.CredentialKind.ENV, env_var=var)
        )
    elif encrypted:
        return credentials.Credentials(credentials.CredentialKind.ENCRYPTED)
    return None


def _model(
    name: str | None, labels: dict[str, str] | None, meta: _Fields, body: _Fields
) -> spec.ModelSpec | None:
    checked = meta.check("name", name, spec.model_name)
    context = body.check(
        "contextLength", body.take("contextLength", int, None), spec.context_length
    )
    listed = body.strings("capabilities")
    capabilities = None
    if listed is not None:
        capabilities = body.check("capabilities", [v for _, v in listed], spec.capabilities)
    raw_vllm = body.take("vllm", dict, None)
    vllm = None if raw_vllm is None else _vllm(_Fields(raw_vllm, "spec.vllm", body.problems))
    warm = body.take("warm", bool, False)
    keep_alive = body.body.get("keepAlive")
    if isinstance(keep_alive, bool) or not isinstance(keep_alive, (int, str, type(None))):
        body.problems.append(
            f"spec.keepAlive: must be a duration such as 5m, not {describe(keep_alive)}"
        )
        keep_alive = None
    keep_alive = body.check("keepAlive", keep_alive, residency.keep_alive)
    if checked is None:
        return None
    update = _rollout(body)
    value = spec.ModelSpec(checked, context, capabilities, labels or {}, vllm)
    return dataclasses.replace(value, warm=bool(warm), keep_alive=keep_alive, update=update)


def _rollout(body: _Fields) -> updatepolicy.Rollout:
    """``updatePolicy`` and ``maxUnavailable`` (issue 19); the defaults where not given."""
    policy = body.check("updatePolicy", body.body.get("updatePolicy", "manual"), _policy)
    most = body.check("maxUnavailable", body.body.get("maxUnavailable", 1), _max_unavailable)
    return updatepolicy.Rollout(policy or updatepolicy.UpdatePolicy.MANUAL, most or 1)


def _policy(value: object) -> updatepolicy.UpdatePolicy:
    try:
        return updatepolicy.policy(value)
    except ValueError as exc:
        raise spec.SpecError("updatePolicy", str(exc).removeprefix("updatePolicy ")) from None


def _max_unavailable(value: object) -> int:
    try:
        return updatepolicy.max_unavailable(value)
    except ValueError as exc:
        raise spec.SpecError("maxUnavailable", str(exc).removeprefix("maxUnavailable ")) from None


def _adapter(
    name: str | None, labels: dict[str, str] | None, meta: _Fields, body: _Fields
) -> spec.AdapterSpec | None:
    checked = meta.check("name", name, residency.adapter_name)
    base = body.check("baseModel", body.take("baseModel", str), spec.model_name)
    source = body.check("source", body.take("source", str), residency.source)
    revision = body.take("revision", str, None)
    if source is not None:
        revision = body.check("revision", revision, lambda v: residency.revision(v, source))
    if checked is None or base is None or source is None:
        return None
    return spec.AdapterSpec(checked, base, source, revision, labels or {})


def _vllm(fields: _Fields) -> engineargs.VllmArgs:
    """A model's engine arguments, every field's type and value checked (problems collected;
    `read` drops the value when there is any)."""
    fields.unknown(tuple(engineargs.KEYS.values()), "vllm")
    value = engineargs.VllmArgs(
        max_model_len=fields.take("maxModelLen", int, None),
        tensor_parallel_size=fields.take("tensorParallelSize", int, None),
        gpus=fields.take("gpus", int, None),
        gpu_memory_utilization=_fraction(fields, "gpuMemoryUtilization"),
        dtype=fields.take("dtype", str, None),
        quantization=fields.take("quantization", str, None),
        enable_lora=bool(fields.take("enableLora", bool, False)),
        extra_args=tuple(v for _, v in fields.strings("extraArgs") or []),
    )
    for key, message in engineargs.problems(value):
        fields.problems.append(f"{fields.where(key)}: {message}")
    return value


def _fraction(fields: _Fields, key: str) -> float | None:
    """A number that may be written ``1`` or ``0.9``; anything else is a problem."""
    value = fields.body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fields.problems.append(f"{fields.where(key)}: must be a number, not {describe(value)}")
        return None
    return float(value)


def _pool(
    name: str | None, labels: dict[str, str] | None, meta: _Fields, body: _Fields
) -> tuple[spec.PoolSpec | None, tuple[tuple[str, str], ...]]:
    checked = meta.check("name", name, lambda v: spec.dns_name(v, "pool"))
    purpose = body.check("purpose", body.take("purpose", str, ""), spec.purpose)
    backends = [
        b for i, b in body.strings("backends") or []
        if body.check(f"backends[{i}]", b, lambda v: spec.dns_name(v, "backend"))
    ]  # fmt: skip
    models = [
        m for i, m in body.strings("models") or []
        if body.check(f"models[{i}]", m, spec.model_name)
    ]  # fmt: skip
    adapters = [
        a for i, a in body.strings("adapters") or []
        if body.check(f"adapters[{i}]", a, residency.adapter_name)
    ]  # fmt: skip
    members = (
        tuple(("backend", b) for b in backends)
        + tuple(("model", m) for m in models)
        + tuple(("adapter", a) for a in adapters)
    )
    if checked is None or purpose is None:
        return None, members
    value = spec.PoolSpec(checked, purpose, tuple(backends), tuple(models), labels or {})
    return dataclasses.replace(value, adapters=tuple(adapters)), members
