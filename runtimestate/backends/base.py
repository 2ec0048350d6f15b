"""The backend port: value types and the small Protocols every adapter implements.

`Observer` is what every backend can do (observe, health, version); `Puller`, `Deleter` and
`LoraManager` exist only where the backend can, and `Capabilities` tells the planner so before it
plans anything (vLLM cannot pull: that is a missing capability, not a run-time failure).

Who calls it: the backend cycle and download workers type against these Protocols; the adapter
modules (`ollama`, `vllm`, `openai`, `gemini`) produce these values. This module is pure: no
I/O, no httpx or ollama imports, so the planner can use the value types. Backend types and
model capabilities are `spec.BackendType` and `spec.Capability`: the desired wing is pure and
imported by both the planner and the adapters, whereas the planner must not import this
package (its `__init__` builds adapters, with httpx).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Protocol, runtime_checkable

from runtimestate import errors
from runtimestate.desired import engineargs, spec

_GENERATIVE = frozenset({spec.Capability.CHAT, spec.Capability.PROMPT, spec.Capability.STREAM})


def capabilities_from_ollama(names: Iterable[str]) -> frozenset[spec.Capability]:
    """Map Ollama's `/api/show` capabilities: completion -> chat, prompt, stream;
    embedding -> embed. Others (tools, vision, thinking, ...) have no llmctl equivalent."""
    found: set[spec.Capability] = set()
    for name in names:
        if name == "completion":
            found |= _GENERATIVE
        elif name == "embedding":
            found.add(spec.Capability.EMBED)
    return frozenset(found)


def capabilities_from_model_id(model_id: str) -> frozenset[spec.Capability]:
    """Best guess for OpenAI-style listings, which do not say what a model does: an id that
    mentions embedding is an embedder, anything else generates. Declared overrides win."""
    if "embed" in model_id.lower():
        return frozenset({spec.Capability.EMBED})
    return _GENERATIVE


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect` and `read` go to httpx; `stall` is the longest gap between two pull
    progress lines; `total` is the deadline of one adapter call (observe, health, version,
    delete, LoRA load/unload), so a hung node costs at most `total`. Pulls have no total:
    downloads take hours, `stall` bounds them instead."""

    connect: float = 3.0
    read: float = 10.0
    stall: float = 60.0
    total: float = 20.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise errors.ConfigurationError(f"timeout {field.name} must be > 0, got {value}")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What an adapter can do besides observing; the planner reads these, not exceptions."""

    can_pull: bool = False
    can_delete: bool = False
    can_load_lora: bool = False
    has_metrics: bool = False
    runs_instances: bool = False  # a node agent: starts and stops `vllm serve` per model
    can_preload: bool = False  # Ollama: loads and unloads a model with a keep-alive (`Preloader`)


@dataclasses.dataclass(frozen=True, slots=True)  # one per listed model: 50,000 in a fleet
class ModelDetails:
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None
    format: str | None = None
    families: tuple[str, ...] = ()
    parent_model: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ObservedModel:
    """One model as the backend reports it. `name` is the backend's display name (Ollama's
    shortest form such as ``llama3.2:latest``, a vLLM served name, a Gemini id without
    ``models/``); comparing names canonically is the caller's job. `model` is the backend's
    own identifier (Ollama model, vLLM root path or HF id). `backend_capabilities` keeps the
    backend's raw words (``tools``, ``vision``, ``generateContent``...)."""

    name: str
    model: str
    digest: str | None = None
    size: int | None = None
    modified_at: datetime | None = None
    details: ModelDetails = ModelDetails()
    context_length: int | None = None
    capabilities: frozenset[spec.Capability] = frozenset()
    backend_capabilities: frozenset[str] = frozenset()
    loaded: bool = False
    size_vram: int | None = None  # a loaded model's bytes in GPU memory (Ollama's `/api/ps`)
    expires_at: datetime | None = None  # when a loaded model unloads by itself

    @property
    def can_chat(self) -> bool:
        return spec.Capability.CHAT in self.capabilities

    @property
    def can_embed(self) -> bool:
        return spec.Capability.EMBED in self.capabilities

    @property
    def can_prompt(self) -> bool:
        return spec.Capability.PROMPT in self.capabilities

    @property
    def can_stream(self) -> bool:
        return spec.Capability.STREAM in self.capabilities


@dataclasses.dataclass(frozen=True)
class EngineMetrics:
    """vLLM load gauges, summed over engines (KV-cache usage: the fullest engine, 0..1)."""

    running: float
    waiting: float
    kv_cache_usage: float | None


class InstanceState(enum.StrEnum):
    """A node agent's instance, as its API words it (``nodeagent.instance``)."""

    STARTING = "starting"
    READY = "ready"
    CRASH_LOOP = "CrashLoopBackOff"
    STOPPING = "stopping"


@dataclasses.dataclass(frozen=True, slots=True)
class ObservedInstance:
    """One ``vllm serve`` instance a node agent runs.

    `name` is its served model name: the declared model's name, which is also the agent's
    instance name. `weights` is the cached weights it runs from; `base_url` is what an OpenAI
    client takes (``http://host:port/v1``); `engine` is `engineargs.fingerprint` of the spec
    the agent reports it runs, compared with the declared one to know when to restart it.
    """

    name: str
    weights: str
    state: InstanceState
    base_url: str
    engine: str
    gpus: tuple[int, ...] = ()
    restarts: int = 0
    last_error: str | None = None
    log_tail: tuple[str, ...] = ()
    context_length: int | None = None  # its declared --max-model-len, when it has one
    adapters: tuple[str, ...] = ()  # the LoRA adapters it serves (issue 16)
    commit: str | None = None  # the hub snapshot it runs from (issue 19); None: not a snapshot


@dataclasses.dataclass(frozen=True, slots=True)
class GpuInventory:
    """A node agent's GPUs: how many, and how many no instance holds."""

    total: int
    free: int


@dataclasses.dataclass(frozen=True, slots=True)
class DiskSpace:
    """A disk as its host reports it, in bytes (a node agent's ``/v1/info`` ``disk``)."""

    total: int
    free: int


@dataclasses.dataclass(frozen=True, slots=True)
class WeightsSize:
    """What a pull would take (`bytes`) and how much of it is already on the host."""

    bytes: int
    present: int


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one observation found. A node agent's `models` are the weights in its cache
    (``loaded`` when an instance runs from them); its `instances` and `gpus` say what runs."""

    models: tuple[ObservedModel, ...]
    healthy: bool
    version: str | None = None
    metrics: EngineMetrics | None = None
    instances: tuple[ObservedInstance, ...] = ()
    gpus: GpuInventory | None = None
    disk: DiskSpace | None = None  # a node agent's weights disk (admission, issue 16)


@dataclasses.dataclass(frozen=True)
class PullProgress:
    """One progress line of a pull; `total`/`completed` are None when the backend left them
    out (Ollama omits zero values)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


@runtime_checkable
class Observer(Protocol):
    """Every adapter. Methods raise only `errors.LlmctlError` subclasses."""

    name: str
    capabilities: Capabilities

    async def observe(self) -> Observation: ...

    async def health(self) -> bool: ...

    async def version(self) -> str | None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Puller(Protocol):
    def pull(self, model: str) -> AsyncIterator[PullProgress]: ...


@runtime_checkable
class Deleter(Protocol):
    async def delete(self, model: str) -> None: ...


@runtime_checkable
class LoraManager(Protocol):
    async def load_lora(
        self, name: str, path: str, base_model: str | None = None, revision: str | None = None
    ) -> None:
        """Load adapter `name` from `path` (a path on the server or a Hub repo id, at
        `revision`) where `base_model` is served (a node agent loads it into that model's
        instance and pulls that revision; a vLLM server serves one base, and takes neither).
        Raises `errors.LlmctlError`."""
        ...

    async def unload_lora(self, name: str) -> None: ...


@runtime_checkable
class Preloader(Protocol):
    """Ollama: keep a model loaded, or unload it, without generating (issue 16)."""

    async def preload(self, model: str, keep_alive: str) -> None:
        """Load `model` and keep it for `keep_alive` (seconds or a Go duration; negative:
        forever). Returns once the node says it loaded. Raises `errors.LlmctlError`."""
        ...

    async def unload(self, model: str) -> None:
        """Unload `model` now (keep_alive 0); one not loaded is success."""
        ...


@runtime_checkable
class InstanceManager(Protocol):
    """A node agent: starts and stops one ``vllm serve`` instance per model."""

    async def start_instance(
        self, name: str, weights: str, vllm: engineargs.VllmArgs | None
    ) -> None:
        """Start (or keep) the instance serving `name` from `weights` with the declared engine
        arguments (`engineargs.agent_body`); one that runs another spec is stopped first.
        Raises `errors.LlmctlError` subclasses; an instance that cannot be placed on free GPUs
        is `errors.RequestRejected` with the agent's "needs N GPU, M free"."""
        ...

    async def stop_instance(self, name: str) -> None:
        """Stop the instance (its whole process group); an absent one is success."""
        ...


@runtime_checkable
class WeightsSizer(Protocol):
    """A node agent: sizes a pull before it is queued (admission, issue 16)."""

    async def weights_size(self, source: str) -> WeightsSize:
        """Raises `errors.LlmctlError` subclasses."""
        ...
