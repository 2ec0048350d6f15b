"""The node's GPU inventory: which GPUs exist, and which instance holds which.

The node agent builds one `Inventory` at start, from NVML (`from_nvml`, through ``nvidia-ml-py``
where GPUs and a driver exist) or from a declared inventory (`parse`, the ``--gpus 2x80GiB``
option, for hosts without GPUs: emulators, CI, demos). The instance supervisor
(`nodeagent.instances`) asks it to `assign` GPUs to an instance and `release` them on stop; a
request that cannot fit raises `Unplaceable` saying why with numbers ("needs 1 GPU, 0 free").
`place` is the pure decision underneath. No GPU is ever held by two instances.

Imports ``pynvml`` lazily, only in `from_nvml`, so a host without the package still starts with a
declared inventory. Must not start processes or touch the disk.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMS = "COUNTxMEMORY (2x80GiB, 1x24GB) or a list of memories (80GiB,40GiB)"
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_MEMORY = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]+)")
_COUNTED = re.compile(r"(?P<count>\d+)\s*[x×]\s*(?P<memory>.+)")


class InventoryError(ValueError):
    """A declared inventory that cannot be parsed, or NVML that cannot be read (configuration)."""


class Unplaceable(Exception):
    """An instance's GPU need does not fit the free GPUs; the message has the numbers."""


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One GPU: its index (what ``CUDA_VISIBLE_DEVICES`` names), memory in bytes, model name."""

    index: int
    memory_bytes: int
    name: str = "declared"


@dataclasses.dataclass(frozen=True)
class Need:
    """What an instance needs: `count` GPUs, each with at least `memory_bytes` if declared."""

    count: int = 1
    memory_bytes: int | None = None


def parse(text: str) -> tuple[Gpu, ...]:
    """The GPUs a ``--gpus`` value declares, indexed from 0.

    Accepts ``2x80GiB``, ``1x24GB`` and ``80GiB,40GiB``. Raises `InventoryError` naming the
    problem and the accepted forms.
    """
    value = text.strip().lower()
    if not value:
        raise InventoryError(f"--gpus is empty; give {FORMS}")
    counted = _COUNTED.fullmatch(value)
    if counted is not None:
        count = int(counted["count"])
        if count < 1:
            raise InventoryError(f"--gpus {text!r}: the count must be at least 1; give {FORMS}")
        memory = parse_memory(counted["memory"], text)
        return tuple(Gpu(index=i, memory_bytes=memory) for i in range(count))
    parts = [part.strip() for part in value.split(",")]
    return tuple(Gpu(index=i, memory_bytes=parse_memory(p, text)) for i, p in enumerate(parts))


def parse_memory(part: str, whole: str | None = None) -> int:
    """Bytes in a memory size such as ``80GiB`` or ``24GB``; raises `InventoryError`."""
    where = f"--gpus {whole!r}" if whole is not None else repr(part)
    found = _MEMORY.fullmatch(part.strip().lower())
    if found is None or found["unit"] not in _UNITS:
        raise InventoryError(
            f"{where}: {part.strip()!r} is not a memory size with a unit "
            f"(GiB, GB, MiB, MB, TiB, TB); give {FORMS}"
        )
    size = int(float(found["number"]) * _UNITS[found["unit"]])
    if size <= 0:
        raise InventoryError(f"{where}: a GPU's memory must be more than 0; give {FORMS}")
    return size


def from_nvml(nvml: Any = None) -> tuple[Gpu, ...]:
    """The GPUs NVML reports, through ``nvidia-ml-py`` (imported here, lazily).

    `nvml` replaces the ``pynvml`` module (tests). Raises `InventoryError` when the package is
    missing or NVML cannot be initialised (no driver), telling the operator to declare ``--gpus``.
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as exc:
            raise InventoryError(
                "cannot read the GPUs: nvidia-ml-py is not installed "
                "(pip install 'llmctl[node]'), or declare them with --gpus 2x80GiB"
            ) from exc
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise InventoryError(
            f"cannot read the GPUs through NVML ({exc}); on a host without an NVIDIA driver, "
            "declare them with --gpus 2x80GiB"
        ) from exc
    try:
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            text = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(Gpu(index=index, memory_bytes=int(memory.total), name=text))
        return tuple(gpus)
    finally:
        nvml.nvmlShutdown()


def place(gpus: Sequence[Gpu], taken: Iterable[int], need: Need) -> tuple[int, ...]:
    """The lowest free GPU indices that satisfy `need`; pure.

    Raises `Unplaceable` with the numbers: "needs 1 GPU, 0 free", or with a memory need "needs 2
    GPUs with 40 GiB, 1 free" (free GPUs with that much memory).
    """
    busy = set(taken)
    fitting = [
        gpu.index
        for gpu in gpus
        if gpu.index not in busy
        and (need.memory_bytes is None or gpu.memory_bytes >= need.memory_bytes)
    ]
    if len(fitting) < need.count:
        noun = "GPU" if need.count == 1 else "GPUs"
        memory = "" if need.memory_bytes is None else f" with {size_text(need.memory_bytes)}"
        raise Unplaceable(f"needs {need.count} {noun}{memory}, {len(fitting)} free")
    return tuple(fitting[: need.count])


def size_text(size: int) -> str:
    """A byte count as operators read GPU memory: ``40 GiB``, ``23.5 GiB``, ``512 MiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} B"


class Inventory:
    """The node's GPUs and who holds them; one per agent, owned by the supervisor.

    Not thread-safe: call it from the agent's event loop only.
    """

    def __init__(self, gpus: Sequence[Gpu]) -> None:
        self.gpus = tuple(gpus)
        self._holders: dict[str, tuple[int, ...]] = {}

    def holders(self) -> Mapping[str, tuple[int, ...]]:
        """Holder name -> the GPU indices it holds."""
        return dict(self._holders)

    def free(self) -> tuple[Gpu, ...]:
        """The GPUs nobody holds."""
        busy = {i for held in self._holders.values() for i in held}
        return tuple(gpu for gpu in self.gpus if gpu.index not in busy)

    def assign(self, holder: str, need: Need) -> tuple[int, ...]:
        """Gives `holder` GPUs meeting `need` and returns their indices.

        Idempotent for a holder that already holds GPUs (returns those). Raises `Unplaceable`.
        """
        if holder in self._holders:
            return self._holders[holder]
        taken = [i for held in self._holders.values() for i in held]
        chosen = place(self.gpus, taken, need)
        self._holders[holder] = chosen
        return chosen

    def claim(self, holder: str, indices: Sequence[int]) -> None:
        """Records that `holder` already holds `indices` (an adopted instance).

        Raises `Unplaceable` when an index is unknown or held by someone else.
        """
        known = {gpu.index for gpu in self.gpus}
        for index in indices:
            if index not in known:
                raise Unplaceable(f"GPU {index} is not in this node's inventory")
            for other, held in self._holders.items():
                if other != holder and index in held:
                    raise Unplaceable(f"GPU {index} is already held by {other!r}")
        self._holders[holder] = tuple(indices)

    def release(self, holder: str) -> None:
        """Frees what `holder` holds; idempotent."""
        self._holders.pop(holder, None)
