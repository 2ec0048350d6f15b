"""The emulated Ollama registry: which models can be pulled, their blobs and metadata.

A catalog maps a model name to a `ModelSpec` (layer sizes, family, parameter size,
quantization, context length, capabilities). Digests are fake but deterministic: derived from
the model name with sha256, so every run and every node agrees on them. The built-in catalog
holds a handful of small, real-looking models; `load` reads a JSON or YAML file of the form
`{"models": {"<name>": {"layers": [<bytes>, ...], "family": ..., ...}}}`.
Used by the Ollama emulator only; no I/O except `load`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from emulators import names

CONFIG_BLOB_SIZE = 487
_SMALL_LAYERS = (1_482, 11_357, 110)  # template, license, params: as real manifests carry


@dataclasses.dataclass(frozen=True)
class Blob:
    """One blob of a manifest: `digest` is `sha256:<64 hex>`."""

    digest: str
    size: int

    @property
    def short(self) -> str:
        """The 12 hex characters shown in `pulling <short>` lines."""
        return self.digest.removeprefix("sha256:")[:12]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model; `name` is the display name (`qwen2:0.5b`)."""

    name: str
    layers: tuple[int, ...]
    family: str = "llama"
    parameter_size: str = "1B"
    quantization_level: str = "Q4_0"
    context_length: int = 4096
    embedding_length: int = 2048
    capabilities: tuple[str, ...] = ("completion",)
    format: str = "gguf"
    digest_seed: str = ""  # a copy keeps its source's blobs: set to the source name

    @property
    def _seed(self) -> str:
        return self.digest_seed or self.name

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Layers in manifest order, then the config blob."""
        sizes = (*self.layers, CONFIG_BLOB_SIZE)
        return tuple(
            Blob(digest="sha256:" + fake_sha256(f"{self._seed}#blob{i}"), size=size)
            for i, size in enumerate(sizes)
        )

    @property
    def size(self) -> int:
        """Sum of all blob sizes, as `/api/tags` reports."""
        return sum(blob.size for blob in self.blobs)

    @property
    def digest(self) -> str:
        """Manifest digest: bare hex, no `sha256:` prefix."""
        return fake_sha256(f"{self._seed}#manifest")

    def details(self) -> dict[str, Any]:
        """The `details` object shared by tags, show and ps."""
        return {
            "parent_model": "",
            "format": self.format,
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def model_info(self) -> dict[str, Any]:
        """A GGUF-like key/value map holding the architecture and its context length."""
        arch = self.family
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.parameter_count": _parameter_count(self.parameter_size),
            "general.file_type": 2,
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding_length,
            f"{arch}.block_count": 24,
            f"{arch}.attention.head_count": 16,
            "tokenizer.ggml.model": "gpt2",
        }
        if "embedding" in self.capabilities:
            info[f"{arch}.pooling_type"] = 1
        return info


def fake_sha256(seed: str) -> str:
    """A stable 64-hex digest for `seed`: not the hash of any real content."""
    return hashlib.sha256(seed.encode()).hexdigest()


def _parameter_count(text: str) -> int:
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    unit = text[-1:].upper()
    try:
        return int(float(text[:-1]) * scale[unit]) if unit in scale else int(text)
    except ValueError:
        return 0


def _mb(n: float) -> int:
    return int(n * 1_000_000)


def _spec(name: str, model_bytes: int, **fields: Any) -> ModelSpec:
    return ModelSpec(name=name, layers=(model_bytes, *_SMALL_LAYERS), **fields)


_TOOLS = ("completion", "tools")
_EMBED = ("embedding",)

DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    _spec(
        "qwen2:0.5b",
        _mb(352),
        family="qwen2",
        parameter_size="494.03M",
        context_length=32768,
        embedding_length=896,
        capabilities=_TOOLS,
    ),
    _spec(
        "qwen2.5:0.5b",
        _mb(397.8),
        family="qwen2",
        parameter_size="494.03M",
        quantization_level="Q4_K_M",
        context_length=32768,
        embedding_length=896,
        capabilities=_TOOLS,
    ),
    _spec(
        "qwen3:0.6b",
        _mb(522.6),
        family="qwen3",
        parameter_size="751.63M",
        quantization_level="Q4_K_M",
        context_length=40960,
        embedding_length=1024,
        capabilities=(*_TOOLS, "thinking"),
    ),
    _spec(
        "llama3.2:1b",
        _mb(1321),
        parameter_size="1.2B",
        quantization_level="Q8_0",
        context_length=131072,
        embedding_length=2048,
        capabilities=_TOOLS,
    ),
    _spec(
        "llama3.2:latest",
        _mb(2019),
        parameter_size="3.2B",
        quantization_level="Q4_K_M",
        context_length=131072,
        embedding_length=3072,
        capabilities=_TOOLS,
    ),
    _spec(
        "llama3:latest",
        _mb(4661),
        parameter_size="8.0B",
        context_length=8192,
        embedding_length=4096,
    ),
    _spec("tinyllama:latest", _mb(637.7), parameter_size="1B", context_length=2048),
    _spec(
        "smollm2:135m",
        _mb(270.9),
        parameter_size="134.52M",
        quantization_level="F16",
        context_length=8192,
        embedding_length=576,
        capabilities=_TOOLS,
    ),
    _spec(
        "nomic-embed-text:latest",
        _mb(274.3),
        family="nomic-bert",
        parameter_size="137M",
        quantization_level="F16",
        context_length=2048,
        embedding_length=768,
        capabilities=_EMBED,
    ),
    _spec(
        "all-minilm:latest",
        _mb(45.9),
        family="bert",
        parameter_size="23M",
        quantization_level="F16",
        context_length=512,
        embedding_length=384,
        capabilities=_EMBED,
    ),
)


class Catalog:
    """Models the emulated registry can serve, looked up case-insensitively by any name form."""

    def __init__(self, specs: Iterable[ModelSpec] = DEFAULT_MODELS) -> None:
        self._by_key = {names.parse(spec.name).key: spec for spec in specs}

    def get(self, name: names.ModelName) -> ModelSpec | None:
        """The spec for `name`, or None when the registry has no such manifest."""
        return self._by_key.get(name.key)

    def specs(self) -> list[ModelSpec]:
        """Every model, in insertion order."""
        return list(self._by_key.values())


def from_mapping(data: Mapping[str, Any]) -> Catalog:
    """Build a catalog from `{"models": {name: fields}}` (or the bare name mapping).

    Raises ValueError on an invalid name or a model without layers.
    """
    models = data.get("models", data)
    specs = []
    for raw_name, fields in models.items():
        name = names.parse(raw_name).display
        layers = tuple(int(n) for n in fields.get("layers", ()))
        if not layers:
            raise ValueError(f"catalog model {raw_name!r} has no layers")
        extra = {k: v for k, v in fields.items() if k != "layers"}
        if "capabilities" in extra:
            extra["capabilities"] = tuple(extra["capabilities"])
        specs.append(ModelSpec(name=name, layers=layers, **extra))
    return Catalog(specs)


def load(path: str | pathlib.Path) -> Catalog:
    """Read a catalog file: JSON when it ends in `.json`, YAML otherwise."""
    file = pathlib.Path(path)
    text = file.read_text()
    data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{file}: a catalog must be a mapping")
    return from_mapping(data)
