"""Byte progress of a weights pull, taken from huggingface_hub's own progress bars.

`snapshot_download(tqdm_class=...)` makes three bars from the class it is given (PROTOCOLS §A.8):
"Fetching N files", "Downloading bytes" and "Reconstructing…". The per-file downloads feed the
last one with `update(n)` per chunk written (10 MiB in 2.4, §A.x), `update(-n)` when a file
restarts from zero. `Meter` turns that into `Progress(completed, total)` values that only go up
and never pass the total: `completed` starts at the bytes already cached. `Meter.bar_class()`
is the tqdm class to pass; it draws nothing. Called from the download threads, so `Meter` locks;
it must not block them: the sink should hand off (e.g. `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

_BYTES_BAR = "Reconstructing"


@dataclasses.dataclass(frozen=True)
class Progress:
    """Bytes of the snapshot present so far, of `total`."""

    completed: int
    total: int


class Meter:
    """Adds up the bytes written by one `snapshot_download` call; thread-safe."""

    def __init__(self, cached: int, total: int, sink: Callable[[Progress], None]) -> None:
        self.cached = cached
        self.total = total
        self._sink = sink
        self._lock = threading.Lock()
        self._written = 0
        self._reported = -1

    def start(self) -> None:
        """Report the starting point (what is cached already)."""
        self.add(0)

    def finish(self) -> None:
        """Report completion: everything is on disk."""
        with self._lock:
            self._written = self.total - self.cached
            self._report()

    def add(self, written: int) -> None:
        """`written` more bytes on disk (negative when a file restarts)."""
        with self._lock:
            self._written += written
            self._report()

    def _report(self) -> None:
        completed = max(0, min(self.total, self.cached + self._written))
        if completed > self._reported:
            self._reported = completed
            self._sink(Progress(completed, self.total))

    def bar_class(self) -> type[hf_tqdm]:
        """A tqdm class for `snapshot_download(tqdm_class=...)` that feeds this meter."""
        meter = self

        class _Bar(hf_tqdm):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True  # never draw: the agent reports through its API
                super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
                self._counts = str(kwargs.get("desc", "")).startswith(_BYTES_BAR)

            def update(self, n: float | None = 1) -> bool | None:
                if self._counts and n:
                    meter.add(int(n))
                return None

        return _Bar
