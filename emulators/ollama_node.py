"""State of one emulated Ollama server: installed and loaded models, disk, downloads.

Tests and benchmarks read and mutate it through `Emulator.nodes[i]` or the admin endpoint.
Keep-alive handling follows PROTOCOLS §1.1: a Go duration string or seconds, `0` unloads,
negative keeps the model loaded "forever" (Go's maximum duration ahead). Loaded models expire
lazily when read. No HTTP here: `emulators.ollama` turns this state into responses.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from emulators import catalog, downloads, names, pacing, server, timestamps

DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 1_000_000_000
DEFAULT_NUM_CTX = 4096
_GO_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}  # fmt: skip
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


@dataclasses.dataclass
class Installed:
    """A model on disk: its registry spec and when its manifest was written."""

    spec: catalog.ModelSpec
    modified_ns: int


@dataclasses.dataclass
class Loaded:
    """A model in memory; `expires_ns` None means it never unloads."""

    spec: catalog.ModelSpec
    expires_ns: int | None
    context_length: int


def keep_alive_ns(value: Any) -> int | None:
    """Nanoseconds to keep a model loaded; None = forever. Raises ValueError when invalid."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_NS
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        return None if value < 0 else int(value * 10**9)
    text = str(value).strip()
    negative = text.startswith("-")
    body = text.lstrip("+-")
    if body == "0":
        return 0
    matches = list(_GO_DURATION.finditer(body))
    if not matches or "".join(m.group(0) for m in matches) != body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = sum(int(float(m.group(1)) * _GO_UNITS[m.group(2)]) for m in matches)
    return None if negative else total


class OllamaNode(server.Node):
    """One emulated Ollama server. Mutate fields directly in tests; `reset` restores."""

    def __init__(
        self,
        index: int,
        registry: catalog.Catalog,
        installed: Iterable[str] = (),
        *,
        pull_rate: float | None = None,
        tick_interval: float = 0.06,
        disk_capacity: int | None = None,
        version: str = "0.12.6",
        clock: Callable[[], int] = time.time_ns,
        pace: pacing.Pace | None = None,
    ) -> None:
        super().__init__(index)
        self.pace = pace or pacing.Pace()  # inference speed (`pacing`)
        self.registry = registry
        self.pull_rate = pull_rate
        self.tick_interval = tick_interval
        self.version = version
        self.clock = clock
        self.disk = downloads.Disk(disk_capacity)
        self.installed: dict[str, Installed] = {}
        self.loaded: dict[str, Loaded] = {}
        self.downloads: dict[str, downloads.BlobDownload] = {}
        self.download_starts: collections.Counter[str] = collections.Counter()
        self.pulls: collections.Counter[str] = collections.Counter()
        # Load-only requests (an empty prompt or message list), by model: "load" and "unload".
        self.preloads: collections.Counter[str] = collections.Counter()
        self.unloads: collections.Counter[str] = collections.Counter()
        self._initial = (list(installed), disk_capacity, pull_rate, dataclasses.replace(self.pace))
        # The encoded `/api/tags` list and what it was made of (`ollama_wire.tags_body`).
        self.listed: tuple[tuple[tuple[catalog.ModelSpec, int], ...], bytes] | None = None
        self.install_names(installed)

    def install_names(self, models: Iterable[str]) -> None:
        """Put catalog models on disk as if pulled. Raises KeyError for unknown names."""
        for text in models:
            spec = self.registry.get(names.parse(text))
            if spec is None:
                raise KeyError(f"model {text!r} is not in the catalog")
            for blob in spec.blobs:
                self.disk.complete[blob.digest] = blob.size
            self.install(spec)

    def install(self, spec: catalog.ModelSpec) -> None:
        """Write the manifest of `spec` (its blobs must be on disk)."""
        self.installed[names.parse(spec.name).key] = Installed(spec, self.clock())

    def find(self, name: names.ModelName) -> Installed | None:
        """The installed model matching `name` case-insensitively."""
        return self.installed.get(name.key)

    def remove(self, name: names.ModelName) -> bool:
        """Delete a manifest, unload it and prune blobs no other model uses."""
        gone = self.installed.pop(name.key, None)
        if gone is None:
            return False
        self.loaded.pop(name.key, None)
        self.drop_unused(gone.spec)
        return True

    def drop_unused(self, old: catalog.ModelSpec) -> bool:
        """Delete the blobs of `old` no installed model uses; True when there were some."""
        in_use = {b.digest for m in self.installed.values() for b in m.spec.blobs}
        unused = [b.digest for b in old.blobs if b.digest not in in_use]
        for digest in unused:
            self.disk.complete.pop(digest, None)
        return bool(unused)

    def load(self, spec: catalog.ModelSpec, keep_alive: Any, num_ctx: int | None) -> None:
        """Load (or refresh) a model, or unload it when keep_alive is 0."""
        duration = keep_alive_ns(keep_alive)
        key = names.parse(spec.name).key
        if duration == 0:
            self.loaded.pop(key, None)
            return
        expires = None if duration is None else self.clock() + duration
        context = min(num_ctx or DEFAULT_NUM_CTX, spec.context_length)
        self.loaded[key] = Loaded(spec, expires, context)

    def running(self) -> list[Loaded]:
        """Loaded models, dropping expired ones; the latest expiry first."""
        now = self.clock()
        expired = [
            k for k, m in self.loaded.items() if m.expires_ns is not None and m.expires_ns <= now
        ]
        for key in expired:
            del self.loaded[key]
        return sorted(self.loaded.values(), key=lambda m: -self._expires(m))

    def expires_at(self, model: Loaded) -> str:
        """RFC 3339 expiry with the local offset."""
        return timestamps.rfc3339_nano(self._expires(model))

    def _expires(self, model: Loaded) -> int:
        return (
            model.expires_ns
            if model.expires_ns is not None
            else self.clock() + timestamps.FOREVER_NS
        )

    def state(self) -> dict[str, Any]:
        """Installed and loaded models, disk use, downloads and counters."""
        return {
            **super().state(),
            "installed": sorted(m.spec.name for m in self.installed.values()),
            "loaded": sorted(m.spec.name for m in self.running()),
            "disk": {"capacity": self.disk.capacity, "used": self.disk.used()},
            "partial": dict(self.disk.partial),
            "downloading": sorted(self.downloads),
            "download_starts": dict(self.download_starts),
            "pulls": dict(self.pulls),
            "preloads": dict(self.preloads),
            "unloads": dict(self.unloads),
            "published": {m.name: m.revision for m in self.registry.specs() if m.revision},
            **self.pace.to_dict(),
        }

    def patch(self, changes: Mapping[str, Any]) -> None:
        """Admin changes: `installed` (list, replaces), `disk_capacity`, `pull_rate`, `ttft`...,
        and `publish`: `{"model": name, "revision"?: text}` moves a tag in the registry to a new
        revision (new blobs, manifest and digest; default the next revision number)."""
        fields = dict(changes)
        self.pace.patch(fields)
        if "publish" in fields:
            self._publish(fields.pop("publish"))
        if "installed" in fields:
            self.installed.clear()
            self.loaded.clear()
            self.install_names(fields.pop("installed"))
        if "disk_capacity" in fields:
            self.disk.capacity = fields.pop("disk_capacity")
        for attr in ("pull_rate", "tick_interval", "version"):
            if attr in fields:
                setattr(self, attr, fields.pop(attr))
        super().patch(fields)

    def _publish(self, request: Any) -> None:
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            raise ValueError('publish takes {"model": name, "revision"?: text}')
        spec = self.registry.publish(names.parse(request["model"]), request.get("revision"))
        # The nodes of one host share the registry and each applies the same request: the
        # first one fixes the revision, the others then find the tag already there.
        request["revision"] = spec.revision

    def reset(self) -> None:
        """Initial installed models, empty memory and downloads, no faults, zero counters."""
        super().reset()
        for download in self.downloads.values():
            download.cancel()
        models, capacity, rate, pace = self._initial
        self.pace = dataclasses.replace(pace)
        self.downloads.clear()
        self.download_starts.clear()
        self.pulls.clear()
        self.preloads.clear()
        self.unloads.clear()
        self.installed.clear()
        self.loaded.clear()
        self.disk = downloads.Disk(capacity)
        self.pull_rate = rate
        self.install_names(models)

    async def close(self) -> None:
        """Stop every running download."""
        for download in list(self.downloads.values()):
            await download.stop()
