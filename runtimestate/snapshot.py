"""The runtime snapshot: what every backend serves right now, as immutable values.

Built by the backend cycle after each pass and swapped in atomically; read by `State.get()`,
the CLI, the status table, the ``llmctl.v1.state.<backend>`` events and the resolver. Values
are frozen and shared, never deep-copied per read. `to_wire`/`from_wire` give the explicit JSON
form used in the database and on NATS. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import types
from collections.abc import Mapping
from typing import Any

WIRE_VERSION = 1


_NODE = "node"  # `spec.BackendType.NODE`; the snapshot stays free of the desired wing


class Phase(enum.StrEnum):
    """How routable a backend is: Ready (answered), Degraded (failing, serving its last good
    list within the grace period), Unreachable (failing past it), Unknown (not probed yet)."""

    READY = "Ready"
    DEGRADED = "Degraded"
    UNREACHABLE = "Unreachable"
    UNKNOWN = "Unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """A Kubernetes-style condition: ``type`` is true or false, with a reason and a message."""

    type: str
    status: bool
    reason: str
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PulledModel:
    """A model a backend reports, in the shape of Ollama's list entries plus what llmctl adds.

    `base_url` is where it is served when that is not the backend's own URL (a node agent's
    model: its ready instance's ``http://host:port/v1``); None means the backend's URL.
    `parent` marks a loaded LoRA adapter: the base model it runs on."""

    name: str
    model: str
    digest: str = ""
    size: int = 0
    modified_at: dt.datetime | None = None
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    format: str = ""
    context_length: int | None = None
    can_chat: bool = False
    can_embed: bool = False
    can_prompt: bool = False
    can_stream: bool = False
    loaded: bool = False
    base_url: str | None = None
    size_vram: int = 0  # a loaded model's bytes in GPU memory (Ollama's `/api/ps`)
    expires_at: dt.datetime | None = None  # when a loaded model unloads by itself
    parent: str | None = None  # a LoRA adapter's base model (vLLM's `parent`); None: a model


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceView:
    """One ``vllm serve`` instance of a node agent, as status shows it (`log_tail`: the last
    few lines of its log, when it crash-loops)."""

    name: str
    state: str
    base_url: str
    gpus: tuple[int, ...] = ()
    restarts: int = 0
    last_error: str | None = None
    log_tail: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class DownloadView:
    """A download as the snapshot shows it: enough for status columns and the resolver."""

    job_id: str
    model: str
    state: str
    percent: float | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DiskView:
    """A backend's disk as status shows it (admission, issue 16): `source` is ``declared``
    (`diskBytes`) or ``reported`` (a node agent's ``/v1/info``); bytes `used` and `free`."""

    source: str
    total: int
    used: int
    free: int


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    """Load figures a backend reports (vLLM metrics); None where unknown."""

    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LLMState:
    """One backend's observed state."""

    id: int
    name: str
    type: str
    base_url: str
    models: tuple[str, ...]
    pulled_models: tuple[PulledModel, ...]
    phase: Phase
    error: str | None = None
    conditions: tuple[Condition, ...] = ()
    observed_generation: int = 0
    last_ok_at: dt.datetime | None = None
    version: str | None = None
    load: Load = Load()
    downloads_pending: tuple[DownloadView, ...] = ()
    downloads_failed: tuple[DownloadView, ...] = ()
    downloads_held: tuple[DownloadView, ...] = ()
    instances: tuple[InstanceView, ...] = ()  # a node agent's; empty for every other type
    adapters: tuple[str, ...] = ()  # the LoRA adapters placed here (issue 16), loaded or not
    disk: DiskView | None = None  # declared or reported; None: pulls are not admitted

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def serving(self) -> tuple[PulledModel, ...]:
        """The models a request can be sent to: every one listed, but on a node agent only
        those with a ready instance (a `base_url`): cached weights are not a server."""
        if self.type != _NODE:
            return self.pulled_models
        return tuple(m for m in self.pulled_models if m.base_url is not None)


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """Every backend's state after one cycle.

    `backends` is a read-only view of a copy of the mapping given: every `State.get()` reader
    shares it, so none can change what the others see (nor can the builder, afterwards).
    """

    backends: Mapping[str, LLMState]
    cycle: int = 0
    taken_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backends, types.MappingProxyType):
            object.__setattr__(self, "backends", types.MappingProxyType(dict(self.backends)))


EMPTY = Snapshot(backends={})


_SCALARS = (str, int, float, bool, type(None))
_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    # dataclasses.fields() per value made serialising a 1,000-backend snapshot cost seconds.
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _jsonable(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _jsonable(getattr(value, name)) for name in _field_names(type(value))}
    return value


def state_to_dict(state: LLMState) -> dict[str, Any]:
    """The JSON-ready form of one backend's state (timestamps as ISO 8601)."""
    doc: dict[str, Any] = _jsonable(state)
    doc["phase"] = state.phase.value
    doc["v"] = WIRE_VERSION
    return doc


def to_wire(state: LLMState) -> bytes:
    return json.dumps(state_to_dict(state), separators=(",", ":")).encode()


def removed_to_wire(name: str) -> bytes:
    """What ``<prefix>.v1.state.<backend>`` carries once a backend is no longer declared."""
    return json.dumps({"name": name, "removed": True}, separators=(",", ":")).encode()


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def state_from_dict(doc: Mapping[str, Any]) -> LLMState:
    """Rebuild a state from `state_to_dict`'s form; unknown keys are ignored."""
    pulled = tuple(
        PulledModel(
            **{
                **m,
                "modified_at": _time(m.get("modified_at")),
                "expires_at": _time(m.get("expires_at")),
            }
        )
        for m in doc.get("pulled_models", ())
    )

    def downloads(key: str) -> tuple[DownloadView, ...]:
        return tuple(DownloadView(**d) for d in doc.get(key, ()))

    instances = tuple(_instance(i) for i in doc.get("instances", ()))
    return LLMState(
        id=doc["id"],
        name=doc["name"],
        type=doc["type"],
        base_url=doc["base_url"],
        models=tuple(doc.get("models", ())),
        pulled_models=pulled,
        phase=Phase(doc["phase"]),
        error=doc.get("error"),
        conditions=tuple(Condition(**c) for c in doc.get("conditions", ())),
        observed_generation=doc.get("observed_generation", 0),
        last_ok_at=_time(doc.get("last_ok_at")),
        version=doc.get("version"),
        load=Load(**doc.get("load", {})),
        downloads_pending=downloads("downloads_pending"),
        downloads_failed=downloads("downloads_failed"),
        downloads_held=downloads("downloads_held"),
        instances=instances,
        adapters=tuple(doc.get("adapters", ())),
        disk=DiskView(**doc["disk"]) if doc.get("disk") else None,
    )


def _instance(doc: Mapping[str, Any]) -> InstanceView:
    gpus, tail = tuple(doc.get("gpus", ())), tuple(doc.get("log_tail", ()))
    return InstanceView(**{**doc, "gpus": gpus, "log_tail": tail})


def from_wire(data: bytes) -> LLMState:
    return state_from_dict(json.loads(data))
