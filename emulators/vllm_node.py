"""State of one emulated vLLM server, and the bodies that depend only on that state.

Holds the served names, the emulated version (which decides the error envelope and the metric
names, PROTOCOLS §3.4 and §3.7), the runner (generate or pooling: which inference routes exist),
loaded LoRA adapters and the gauges tests set (`running`, `waiting`, `kv_cache_usage`).
No HTTP here: `emulators.vllm` serves it.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from emulators import pacing, server

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_VERSION = "0.33.0"
NESTED_ERRORS_SINCE = (0, 10, 1)
ENGINE_LABEL_SINCE = (0, 9, 0)
OLD_CACHE_METRIC_BEFORE = (0, 10, 0)
_GAUGES = ("running", "waiting", "kv_cache_usage", "healthy")
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def version_tuple(text: str) -> tuple[int, int, int]:
    """`"0.10.1rc1"` -> `(0, 10, 1)`; missing parts are 0. Raises ValueError when not a version."""
    match = _VERSION.match(text.strip().removeprefix("v"))
    if match is None:
        raise ValueError(f"not a vLLM version: {text!r}")
    major, minor, patch = (int(part or 0) for part in match.groups())
    return major, minor, patch


@dataclasses.dataclass(frozen=True)
class Lora:
    """A loaded LoRA adapter: `path` is its `lora_path`, `parent` its base model name."""

    path: str
    parent: str


class VllmNode(server.Node):
    """One emulated `vllm serve`. Mutate the gauge fields directly in tests."""

    def __init__(
        self,
        index: int,
        model: str = DEFAULT_MODEL,
        served_model_names: Sequence[str] = (),
        *,
        max_model_len: int = 32768,
        version: str = DEFAULT_VERSION,
        api_key: str | None = None,
        enable_lora: bool = False,
        runner: str = "generate",
        embedding_size: int = 384,
        ttft: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        super().__init__(index)
        self.pace = pacing.Pace(ttft, token_delay)  # inference speed (`pacing`)
        self._initial_pace = dataclasses.replace(self.pace)
        self.model = model
        self.served_model_names = list(served_model_names) or [model]
        self.max_model_len = max_model_len
        self.version = version
        self.api_key = api_key
        self.enable_lora = enable_lora
        self.runner = runner
        self.embedding_size = embedding_size
        self.loras: dict[str, Lora] = {}
        self.missing_lora_paths: set[str] = set()
        self.running = 0.0
        self.waiting = 0.0
        self.kv_cache_usage = 0.0
        self.healthy = True
        self.counters: collections.Counter[str] = collections.Counter()
        self._initial_version = version

    @property
    def version_info(self) -> tuple[int, int, int]:
        """The emulated version as a tuple, for comparisons."""
        return version_tuple(self.version)

    @property
    def nested_errors(self) -> bool:
        """True from 0.10.1: `{"error": {...}}`; before: the flat object."""
        return self.version_info >= NESTED_ERRORS_SINCE

    def error_body(self, status: int, message: str, kind: str, param: str | None) -> Any:
        """vLLM's `ErrorResponse` in this version's shape."""
        detail = {"message": message, "type": kind, "param": param, "code": status}
        if self.nested_errors:
            return {"error": detail}
        return {"object": "error", **detail}

    def resolve(self, requested: str | None) -> str | None:
        """The response `model` for a requested name; None when it is not served."""
        if not requested:
            return self.served_model_names[0]
        if requested in self.served_model_names or requested in self.loras:
            return requested
        return None

    def model_cards(self) -> dict[str, Any]:
        """`/v1/models`: one card per served name, then one per LoRA adapter."""
        now = int(time.time())
        cards = [
            self._card(name, self.model, None, self.max_model_len, now)
            for name in self.served_model_names
        ]
        cards += [
            self._card(name, lora.path, lora.parent, None, now) for name, lora in self.loras.items()
        ]
        return {"object": "list", "data": cards}

    @staticmethod
    def _card(
        name: str, root: str, parent: str | None, max_len: int | None, now: int
    ) -> dict[str, Any]:
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}",
            "object": "model_permission",
            "created": now,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        return {
            "id": name,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": root,
            "parent": parent,
            "max_model_len": max_len,
            "permission": [permission],
        }

    def state(self) -> dict[str, Any]:
        """Served names, version, adapters, gauges and counters."""
        return {
            **super().state(),
            "served_model_names": self.served_model_names,
            "version": self.version,
            "loras": {name: dataclasses.asdict(lora) for name, lora in self.loras.items()},
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_usage": self.kv_cache_usage,
            "healthy": self.healthy,
            "counters": dict(self.counters),
            **self.pace.to_dict(),
        }

    def patch(self, changes: Mapping[str, Any]) -> None:
        """Admin changes: `running`, `waiting`, `kv_cache_usage`, `healthy`, `version`, `ttft`,
        `token_delay`."""
        fields = dict(changes)
        self.pace.patch(fields)
        for attr in (*_GAUGES, "version"):
            if attr in fields:
                setattr(self, attr, fields.pop(attr))
        super().patch(fields)

    def reset(self) -> None:
        """No adapters, gauges at zero, healthy, initial version, no faults, zero counters."""
        super().reset()
        self.loras.clear()
        self.running = self.waiting = self.kv_cache_usage = 0.0
        self.healthy = True
        self.version = self._initial_version
        self.counters.clear()
        self.pace = dataclasses.replace(self._initial_pace)
