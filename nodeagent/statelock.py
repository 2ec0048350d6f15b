"""The lock that keeps one node agent per state directory: ``<state dir>/agent.lock``.

Two agents over one state directory would both adopt, restart and stop the same recorded
instances, and put two instances on one GPU. ``llmctl node serve`` (`controller.node`) takes
this lock before it opens the supervisor and holds it for the life of the process: an exclusive
``flock`` on the lock file, which the kernel drops when the process exits, also after SIGKILL,
so a stale file never blocks the next agent. The holder writes its pid into the file so a second
agent can name it. The descriptor is not inheritable: instances never hold the lock.

Must not delete the lock file (a deleted-and-recreated file could be locked twice) nor anything
else in the state directory. Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
from collections.abc import Iterator

FILE_NAME = "agent.lock"


class StateDirBusy(Exception):
    """Another process holds the state directory; the message names it, its pid and the fix."""

    def __init__(self, state_dir: pathlib.Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "a process whose pid is not recorded yet"
        super().__init__(
            f"state directory {state_dir} is in use by another node agent ({holder}): "
            "stop that agent or give another --state-dir"
        )
        self.state_dir = state_dir
        self.pid = pid


class StateDirUnusable(Exception):
    """The state directory cannot be created or its lock file opened; the message says why."""


@contextlib.contextmanager
def held(state_dir: pathlib.Path) -> Iterator[None]:
    """Hold the lock on `state_dir` (created if missing) for the block.

    Raises `StateDirBusy` at once, without waiting, when another process holds it, and
    `StateDirUnusable` when the directory or the lock file cannot be made.
    """
    path = state_dir / FILE_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StateDirUnusable(
            f"--state-dir {state_dir}: {exc.strerror or exc}: give a writable directory"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise StateDirBusy(state_dir, _holder(path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # drops the lock if we held it


def _holder(path: pathlib.Path) -> int | None:
    """The pid the holder wrote, or None while it has not written it yet."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() else None
