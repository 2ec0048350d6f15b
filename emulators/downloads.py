"""Emulated blob downloads: a disk with a capacity, and shared, resumable transfers.

Mirrors Ollama's `blobDownloadManager` (PROTOCOLS §1.4): one `BlobDownload` per digest, shared by
every pull that needs the blob, reference-counted by its waiters. When the last waiter leaves,
the transfer stops; the bytes already written stay on the `Disk` as a partial file, and the next
download of that digest resumes from them. A transfer that would overflow the disk capacity
fails with Ollama's no-space error. Used by `emulators.ollama_pull`; no HTTP here.
"""

from __future__ import annotations

import asyncio
import contextlib

from emulators import catalog

BLOB_DIR = "/root/.ollama/models/blobs"


class Disk:
    """Blob storage of one node: complete blobs, partial blobs and an optional capacity."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.complete: dict[str, int] = {}
        self.partial: dict[str, int] = {}

    def used(self) -> int:
        """Bytes taken by complete and partial blobs."""
        return sum(self.complete.values()) + sum(self.partial.values())

    def room(self) -> int | None:
        """Bytes still free, or None when the capacity is unlimited."""
        return None if self.capacity is None else max(0, self.capacity - self.used())

    def has(self, digest: str) -> bool:
        """True when the whole blob is stored."""
        return digest in self.complete

    def clear(self) -> None:
        """Forget every blob."""
        self.complete.clear()
        self.partial.clear()


def no_space_error(digest: str) -> str:
    """Ollama's error text when a blob write hits a full disk."""
    return f"write {BLOB_DIR}/{digest.replace(':', '-')}-partial: no space left on device"


class BlobDownload:
    """One blob in transit. `rate` is bytes per second; None or 0 means instant."""

    def __init__(self, disk: Disk, blob: catalog.Blob, rate: float | None, tick: float) -> None:
        self.disk = disk
        self.blob = blob
        self.rate = rate
        self.tick = tick
        self.waiters = 0
        self.error: str | None = None
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def completed(self) -> int:
        """Bytes stored so far (shared by every waiter)."""
        if self.disk.has(self.blob.digest):
            return self.blob.size
        return self.disk.partial.get(self.blob.digest, 0)

    @property
    def active(self) -> bool:
        """True while the transfer runs or has not started."""
        return not self.finished.is_set()

    def attach(self) -> None:
        """Count one more waiter; starts the transfer on the first."""
        self.waiters += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def detach(self) -> None:
        """Count one waiter less; the last one leaving an unfinished transfer stops it."""
        self.waiters -= 1
        if self.waiters <= 0 and self._task is not None and not self._task.done():
            self._task.cancel()

    def cancel(self) -> None:
        """Stop the transfer now; waiters see the error `context canceled`."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the transfer and wait for it; the partial bytes stay on the disk."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while not self._write(self._step(loop.time() - last)):
                last = loop.time()
                await asyncio.sleep(self.tick)
        except asyncio.CancelledError:
            self.error = "context canceled"
            raise
        finally:
            self.finished.set()

    def _step(self, elapsed: float) -> int:
        remaining = self.blob.size - self.completed
        if not self.rate:
            return remaining
        return min(remaining, int(self.rate * elapsed))

    def _write(self, size: int) -> bool:
        """Store `size` more bytes; True when the transfer is over (done or failed)."""
        digest = self.blob.digest
        room = self.disk.room()
        if room is not None and size > room:
            self.disk.partial[digest] = self.completed + room
            self.error = no_space_error(digest)
            return True
        done = self.completed + size
        if done >= self.blob.size:
            self.disk.partial.pop(digest, None)
            self.disk.complete[digest] = self.blob.size
            return True
        self.disk.partial[digest] = done
        return False
