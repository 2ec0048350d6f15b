"""The engine arguments a model declares for ``vllm serve``: `VllmArgs`, its checks, its form.

A model's ``vllm`` block (`runtimestate.desired.spec.ModelSpec.vllm`) says how a node agent
starts the model's instances: the fields mirror the agent's engine arguments
(``nodeagent.command.EngineArgs``, plus the GPU count of its ``ModelSpec``) under the same names,
so handing them over is a straight mapping; this module does not import the agent. Called by
`spec` (validation), `documents` (files), `store` (the JSON column) and the CLI. `problems`
lists every bad field by its file name (``gpuMemoryUtilization``) and the valid range; it
never echoes an extra argument that is refused (``--api-key=K`` carries a secret). Pure.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from runtimestate import echo

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # PROTOCOLS.md B.4
# The flags the agent sets itself on every instance (its command template, its probes' key).
RESERVED_FLAGS = ("--host", "--port", "--served-model-name", "--api-key")
MAX_MODEL_LEN = 100_000_000
MAX_GPUS = 64
MAX_EXTRA_ARG = 1000
# vLLM's quantization methods change between releases (awq, gptq, fp8, bitsandbytes, ...):
# a method name is checked for its shape and left to vLLM to know.
_QUANTIZATION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Attribute -> the key in files, JSON and the stored column; also the order they are shown in.
KEYS = {
    "max_model_len": "maxModelLen",
    "tensor_parallel_size": "tensorParallelSize",
    "gpus": "gpus",
    "gpu_memory_utilization": "gpuMemoryUtilization",
    "dtype": "dtype",
    "quantization": "quantization",
    "enable_lora": "enableLora",
    "extra_args": "extraArgs",
}
# The flag each field renders to (nodeagent.command.EngineArgs.flags): not also in extraArgs.
_FLAGS = {
    "--max-model-len": "maxModelLen",
    "--tensor-parallel-size": "tensorParallelSize",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--dtype": "dtype",
    "--quantization": "quantization",
    "--enable-lora": "enableLora",
}


@dataclasses.dataclass(frozen=True, slots=True)
class VllmArgs:
    """``vllm serve`` engine arguments; None (or False, or no extra) leaves vLLM's default.

    ``gpus`` is how many GPUs an instance needs when it differs from the tensor-parallel size
    (the agent's default: that size, or 1); ``extra_args`` are passed verbatim, after the rest.
    """

    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    gpus: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str | None = None
    quantization: str | None = None
    enable_lora: bool = False
    extra_args: tuple[str, ...] = ()


def _whole(value: int | None, low: int, high: int, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{echo.quoted(value)} must be a whole number {what} from {low} to {high}"
    return None


def problems(args: VllmArgs) -> list[tuple[str, str]]:
    """Every bad field of ``args`` as (key, message); empty when a node agent can run it."""
    found = [
        ("maxModelLen", _whole(args.max_model_len, 1, MAX_MODEL_LEN, "of tokens")),
        ("tensorParallelSize", _whole(args.tensor_parallel_size, 1, MAX_GPUS, "of GPUs")),
        ("gpus", _whole(args.gpus, 0, MAX_GPUS, "of GPUs")),
        ("gpuMemoryUtilization", _utilization(args.gpu_memory_utilization)),
        ("dtype", _dtype(args.dtype)),
        ("quantization", _quantization(args.quantization)),
    ]
    gpus, size = args.gpus, args.tensor_parallel_size
    if not found[1][1] and not found[2][1] and gpus is not None and size and gpus < size:
        found.append(("gpus", f"{gpus} is fewer than tensorParallelSize {size}: "
                              "each tensor-parallel rank needs its own GPU"))  # fmt: skip
    for index, token in enumerate(args.extra_args):
        found.append((f"extraArgs[{index}]", _extra(args, token)))
    return [(key, message) for key, message in found if message]


def _utilization(value: float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{echo.quoted(value)} must be a fraction of GPU memory in (0, 1], e.g. 0.9"
    if not 0 < value <= 1:
        return f"{echo.quoted(value)} must be a fraction of GPU memory in (0, 1], e.g. 0.9"
    return None


def _dtype(value: str | None) -> str | None:
    if value is None or value in DTYPES:
        return None
    return f"{echo.quoted(value)} is not one of {'|'.join(DTYPES)}"


def _quantization(value: str | None) -> str | None:
    if value is None or _QUANTIZATION.match(value):
        return None
    return (
        f"{echo.quoted(value)} is not a vLLM quantization method name "
        "(lowercase letters, digits, - and _, e.g. awq, gptq or fp8)"
    )


def _extra(args: VllmArgs, token: str) -> str | None:
    """Why one extra argument is refused, without echoing it (it may carry a key)."""
    if not isinstance(token, str) or not token or _CONTROL.search(token):
        return "must be non-empty printable text (one argv element)"
    if len(token) > MAX_EXTRA_ARG:
        return f"must be at most {MAX_EXTRA_ARG} characters"
    flag = token.split("=", 1)[0]
    if flag in RESERVED_FLAGS:
        return f"{flag} is set by the node agent itself; remove it"
    key = _FLAGS.get(flag)
    if key is not None and document(args).get(key) is not None:
        return f"{flag} is also declared as {key}; give it once"
    return None


def document(args: VllmArgs) -> dict[str, Any]:
    """The declared fields under their file keys, in a fixed order (what files and JSON show)."""
    shown: dict[str, Any] = {}
    for attr, key in KEYS.items():
        value = getattr(args, attr)
        if value is not None and value is not False and value != ():
            shown[key] = list(value) if isinstance(value, tuple) else value
    return shown


def from_document(raw: Mapping[str, Any]) -> VllmArgs:
    """`VllmArgs` from `document`'s form (the stored column); unknown keys are ignored."""
    values = {attr: raw[key] for attr, key in KEYS.items() if raw.get(key) is not None}
    if "extra_args" in values:
        values["extra_args"] = tuple(values["extra_args"])
    if "gpu_memory_utilization" in values:
        values["gpu_memory_utilization"] = float(values["gpu_memory_utilization"])
    return VllmArgs(**values)


_ENGINE_FIELDS = tuple(key for key in KEYS if key != "gpus")


def agent_body(args: VllmArgs | None) -> dict[str, Any]:
    """What a node agent's ``PUT /v1/instances/{name}`` takes besides ``weights``: the engine
    arguments under the agent's names (``max_model_len``...) and the GPU count, defaults left
    out (the agent's ``gpus`` default is the tensor-parallel size, or 1)."""
    if args is None:
        return {"engine": {}}
    engine: dict[str, Any] = {}
    for field in _ENGINE_FIELDS:
        value = getattr(args, field)
        if value not in (None, False, ()):
            engine[field] = list(value) if isinstance(value, tuple) else value
    body: dict[str, Any] = {"engine": engine}
    if args.gpus is not None:
        body["gpus"] = args.gpus
    return body


def fingerprint(body: Mapping[str, Any]) -> str:
    """One string per instance spec, the same for the body sent (`agent_body`) and the spec
    the agent reports back (its ``engine`` and ``gpus``, defaults included or not): compare
    them to know whether a running instance has the declared arguments."""
    raw = body.get("engine")
    engine = raw if isinstance(raw, Mapping) else {}
    kept = {k: v for k, v in engine.items() if v not in (None, False, (), [])}
    gpus = body.get("gpus")
    return json.dumps({"engine": kept, "gpus": gpus}, sort_keys=True, separators=(",", ":"))
