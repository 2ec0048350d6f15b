"""The emulated Ollama registry: which models can be pulled, their blobs and metadata.

A catalog maps a model name to a `ModelSpec` (layer sizes, family, parameter size,
quantization, context length, capabilities). Blob digests are fake but deterministic: derived
from the model name (and its published revision) with sha256, so every run and every node agrees
on them; a model's digest is the sha256 of its registry manifest, as Ollama's is (PROTOCOLS C.2).
`Catalog.publish` moves a tag to a new revision: new blobs, a new manifest, a new digest.
The built-in catalog holds a handful of small, real-looking models (`builtin_names`); `load`
reads a JSON or YAML file of the form
`{"models": {"<name>": {"layers": [<bytes>, ...], "family": ..., ...}}}` (the keys are
`FIELDS`; `quantization` is the documented spelling of `quantization_level`) and raises
`CatalogError` naming the file, model and field of anything it cannot use.
Used by the Ollama emulator only; no I/O except `load`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from emulators import names

CONFIG_BLOB_SIZE = 487
MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
_LAYER_TYPES = ("model", "template", "license", "params", "system")
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
    revision: str = ""  # set by `Catalog.publish`: the tag moved, its blobs are new

    @property
    def _seed(self) -> str:
        seed = self.digest_seed or self.name
        return f"{seed}@{self.revision}" if self.revision else seed

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

    def manifest(self) -> dict[str, Any]:
        """The registry manifest: its blobs, the last one being the config."""
        *layers, config = self.blobs
        return {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
            "layers": [
                {
                    "mediaType": f"application/vnd.ollama.image.{_LAYER_TYPES[min(i, 4)]}",
                    "digest": blob.digest,
                    "size": blob.size,
                }
                for i, blob in enumerate(layers)
            ],
        }

    @functools.cached_property
    def manifest_body(self) -> bytes:
        """The manifest's bytes as the registry serves them (and Ollama writes them)."""
        return json.dumps(self.manifest(), separators=(",", ":")).encode()

    @functools.cached_property
    def digest(self) -> str:
        """Manifest digest, the sha256 of `manifest_body`: bare hex, no `sha256:` prefix."""
        return hashlib.sha256(self.manifest_body).hexdigest()

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

    def publish(self, name: names.ModelName, revision: str | None = None) -> ModelSpec:
        """Move the tag `name` to `revision` (default: the next one): new blobs and digest.

        Publishing the revision a tag already has changes nothing (several nodes sharing this
        catalog may each apply one admin request). Raises KeyError for a model not in it."""
        spec = self._by_key.get(name.key)
        if spec is None:
            raise KeyError(f"model {name.display!r} is not in the catalog")
        wanted = revision or str(int(spec.revision or "1") + 1)
        if wanted != spec.revision:
            spec = dataclasses.replace(spec, revision=wanted)
            self._by_key[name.key] = spec
        return spec


class CatalogError(ValueError):
    """A catalog file the emulator cannot use; the message names the file, model and field."""


# The fields a catalog entry may carry, with the `ModelSpec` field each sets. `quantization`
# is the spelling the README documents; `quantization_level` is Ollama's own key.
_TEXT_FIELDS = {
    "family": "family",
    "parameter_size": "parameter_size",
    "quantization": "quantization_level",
    "quantization_level": "quantization_level",
    "format": "format",
}
_NUMBER_FIELDS = {"context_length": "context_length", "embedding_length": "embedding_length"}
FIELDS = ("layers", *_TEXT_FIELDS, *_NUMBER_FIELDS, "capabilities")


def builtin_names() -> list[str]:
    """The display names of the built-in catalog's models, in order."""
    return [spec.name for spec in DEFAULT_MODELS]


def from_mapping(data: Mapping[str, Any], source: str = "catalog") -> Catalog:
    """Build a catalog from `{"models": {name: fields}}` (or the bare name mapping).

    Raises CatalogError, naming `source`, the model and the field, on an invalid name, an
    unknown field, a value of the wrong type, or a model without layers.
    """
    models = data.get("models", data)
    if not isinstance(models, Mapping) or not models:
        raise CatalogError(f"{source}: give models as a mapping of name to fields")
    return Catalog(_spec_of(source, raw_name, fields) for raw_name, fields in models.items())


def _spec_of(source: str, raw_name: Any, fields: Any) -> ModelSpec:
    where = f"{source}: model {raw_name!r}"
    try:
        name = names.parse(str(raw_name)).display
    except names.InvalidNameError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    if not isinstance(fields, Mapping):
        raise CatalogError(f"{where}: give its fields as a mapping, such as {{layers: [1000]}}")
    values: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "layers":
            values["layers"] = _sizes(where, value)
        elif key in _TEXT_FIELDS and isinstance(value, str) and value:
            values[_TEXT_FIELDS[key]] = value
        elif key in _NUMBER_FIELDS and _is_count(value):
            values[_NUMBER_FIELDS[key]] = value
        elif key == "capabilities" and _is_words(value):
            values["capabilities"] = tuple(value)
        elif key in FIELDS:
            raise CatalogError(f"{where}: {key}: {_EXPECTED[key]}, not {value!r}")
        else:
            raise CatalogError(f"{where}: unknown field {key!r}; known: {', '.join(FIELDS)}")
    if not values.get("layers"):
        raise CatalogError(f"{where}: has no layers; give their sizes, such as layers: [1000]")
    return ModelSpec(name=name, **values)


_EXPECTED = {
    "layers": "a list of layer sizes in bytes (positive integers)",
    **{key: "a non-empty string" for key in _TEXT_FIELDS},
    **{key: "a positive integer" for key in _NUMBER_FIELDS},
    "capabilities": "a list of words, such as [completion, tools] or [embedding]",
}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_words(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _sizes(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_count(item) for item in value):
        raise CatalogError(f"{where}: layers: {_EXPECTED['layers']}, not {value!r}")
    return tuple(value)


def load(path: str | pathlib.Path) -> Catalog:
    """Read a catalog file: JSON when it ends in `.json`, YAML otherwise.

    Raises CatalogError (naming the file) when it cannot be read, parsed or used."""
    file = pathlib.Path(path)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalog {file}: {exc}") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if file.suffix == ".json" else "YAML"
        detail = " ".join(str(exc).split())
        raise CatalogError(f"catalog {file} is not valid {kind}: {detail}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"catalog {file}: a catalog must be a mapping of models")
    return from_mapping(data, f"catalog {file}")
