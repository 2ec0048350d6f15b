"""What an instance runs: the model spec, its engine arguments and the argv they render to.

The supervisor (`nodeagent.instances`) renders a `ModelSpec` into the argv of one model-server
process with `render`: the command template (default `DEFAULT_TEMPLATE`, ``vllm serve``) with
its placeholders filled, then the engine arguments as ``vllm serve`` flags (PROTOCOLS.md B.4,
§3.9: ``--max-model-len``, ``--tensor-parallel-size``, ``--gpu-memory-utilization``,
``--dtype``, ``--quantization``, ``--enable-lora``), then the extra arguments verbatim.
Placeholders are replaced token by token, never through a shell, so a model name cannot inject
arguments. An ``--api-key`` among the arguments is a secret: `redacted` is the argv to show or
log, `api_key` the key the agent's probes send. Pure: no processes, no disk.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

DEFAULT_TEMPLATE: tuple[str, ...] = (
    "vllm",
    "serve",
    "{path}",
    "--served-model-name",
    "{name}",
    "--host",
    "{host}",
    "--port",
    "{port}",
)
PLACEHOLDERS = ("{path}", "{name}", "{host}", "{port}")
API_KEY_FLAG = "--api-key"  # vllm serve's bearer keys (B.4): a secret, never shown
MASK = "***"
LORA_FLAG = "--enable-lora"  # runtime LoRA also needs LORA_ENV in the instance's environment
LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


class SpecError(ValueError):
    """A model spec or command template the agent cannot run (the caller's input)."""


@dataclasses.dataclass(frozen=True)
class EngineArgs:
    """The ``vllm serve`` engine arguments declared for a model; None leaves vLLM's default."""

    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str | None = None
    quantization: str | None = None
    enable_lora: bool = False
    extra_args: tuple[str, ...] = ()

    def flags(self) -> list[str]:
        """The flags, in a fixed order (so an unchanged spec renders the same argv)."""
        flags: list[str] = []
        if self.max_model_len is not None:
            flags += ["--max-model-len", str(self.max_model_len)]
        if self.tensor_parallel_size is not None:
            flags += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.gpu_memory_utilization is not None:
            flags += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.dtype is not None:
            flags += ["--dtype", self.dtype]
        if self.quantization is not None:
            flags += ["--quantization", self.quantization]
        if self.enable_lora:
            flags.append(LORA_FLAG)
        return [*flags, *self.extra_args]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model to serve: its served name (the instance's key), weights path, arguments, need.

    `gpus` defaults to the tensor-parallel size (or 1); `gpu_memory_bytes` is the memory each
    of its GPUs must have, when the model declares it; `weights` is the name of the cached
    weights `path` came from (None when it was given as a bare path).
    """

    name: str
    path: str
    engine: EngineArgs = EngineArgs()
    gpus: int | None = None
    gpu_memory_bytes: int | None = None
    weights: str | None = None

    @property
    def gpu_count(self) -> int:
        """How many GPUs the instance needs."""
        if self.gpus is not None:
            return self.gpus
        return self.engine.tensor_parallel_size or 1


def shown(spec: ModelSpec) -> ModelSpec:
    """`spec` with every ``--api-key`` value among its extra arguments masked: what is shown."""
    extra = redacted(spec.engine.extra_args)
    return dataclasses.replace(spec, engine=dataclasses.replace(spec.engine, extra_args=extra))


def check(spec: ModelSpec) -> None:
    """Raises `SpecError` naming the first problem of `spec`; returns None when it can run."""
    if not spec.name.strip() or any(not c.isprintable() for c in spec.name):
        raise SpecError(f"model name {spec.name!r} must be non-empty printable text")
    if not spec.path.strip():
        raise SpecError(f"model {spec.name!r}: the weights path is empty")
    engine = spec.engine
    if engine.max_model_len is not None and engine.max_model_len < 1:
        raise SpecError(f"model {spec.name!r}: max_model_len must be at least 1")
    if engine.tensor_parallel_size is not None and engine.tensor_parallel_size < 1:
        raise SpecError(f"model {spec.name!r}: tensor_parallel_size must be at least 1")
    utilization = engine.gpu_memory_utilization
    if utilization is not None and not 0 < utilization <= 1:
        raise SpecError(
            f"model {spec.name!r}: gpu_memory_utilization must be in (0, 1], got {utilization}"
        )
    if engine.dtype is not None and engine.dtype not in DTYPES:
        raise SpecError(f"model {spec.name!r}: dtype must be one of {', '.join(DTYPES)}")
    if spec.gpu_count < 0:
        raise SpecError(f"model {spec.name!r}: gpus must be 0 or more")


def check_template(template: Sequence[str]) -> None:
    """Raises `SpecError` unless `template` is a non-empty argv naming ``{port}``."""
    if not template or not template[0]:
        raise SpecError("the instance command template is empty; give an argv such as vllm serve")
    if not any("{port}" in token for token in template):
        raise SpecError("the instance command template must contain {port}: the agent picks it")


def render(template: Sequence[str], spec: ModelSpec, host: str, port: int) -> tuple[str, ...]:
    """The argv of one instance: `template` with its placeholders filled, then the flags."""
    values = {"{path}": spec.path, "{name}": spec.name, "{host}": host, "{port}": str(port)}
    # One pass per token: a value that happens to contain "{port}" is not filled again.
    argv = [_PLACEHOLDER.sub(lambda found: values[found[0]], token) for token in template]
    return (*argv, *spec.engine.flags())


def api_key(argv: Sequence[str]) -> str | None:
    """The first ``--api-key`` value in `argv` (``--api-key K`` or ``--api-key=K``), if any."""
    for index, token in enumerate(argv):
        if token == API_KEY_FLAG and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(API_KEY_FLAG + "="):
            return token.split("=", 1)[1]
    return None


def redacted(argv: Sequence[str]) -> tuple[str, ...]:
    """`argv` with every ``--api-key`` value masked (the flag takes one or more values)."""
    shown: list[str] = []
    masking = False
    for token in argv:
        if token.startswith(API_KEY_FLAG + "="):
            shown.append(f"{API_KEY_FLAG}={MASK}")
            masking = False
        elif token == API_KEY_FLAG:
            shown.append(token)
            masking = True
        elif masking and not token.startswith("-"):
            shown.append(MASK)
        else:
            shown.append(token)
            masking = False
    return tuple(shown)
