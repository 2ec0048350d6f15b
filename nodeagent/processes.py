"""Model-server processes at the OS level: spawn one in its own process group, watch, end it.

The supervisor (`nodeagent.instances`) spawns each instance with `spawn` (a new session, so
the instance and every child it forks share one process group; stdout and stderr appended to
the instance's log file; not killed when the agent dies, so a restarted agent can adopt it),
recognises processes with `identity` (pid plus the kernel's start time, from ``/proc``), and
ends a whole group with `terminate_group` (SIGTERM, a grace period, SIGKILL). `free_port`
picks the port an instance will bind. Linux only (``/proc``), as GPU hosts are.

Zombies count as gone: a dead child whose parent has not reaped it holds no port or GPU.
Must not decide anything (restarts, adoption): that is the supervisor's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

Sleep = Callable[[float], Awaitable[None]]


def free_port(host: str) -> int:
    """A TCP port on `host` that was free a moment ago (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    argv: Sequence[str],
    log: pathlib.Path,
    environment: Mapping[str, str],
    log_limit: int = 64 * 2**20,
    shown: Sequence[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Starts `argv` as the leader of a new session, output appended to `log`.

    A log already over `log_limit` bytes is first moved to ``<log>.1`` (replacing the previous
    one), so restarts over weeks keep at most about twice that on disk. The log's header line
    shows `shown` (the argv with its secrets masked) instead of `argv` when given. Raises
    OSError when the executable cannot be run (missing, not executable).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > log_limit:
            os.replace(log, log.with_name(log.name + ".1"))
    with log.open("ab") as sink:
        header = " ".join(argv if shown is None else shown)
        sink.write(f"--- llmctl node agent: starting {header}\n".encode())
        sink.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(environment),
            close_fds=True,
        )


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None when there is no pid."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def identity(pid: int) -> tuple[int, int] | None:
    """(pgid, start time) of a live, non-zombie `pid`; None when it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[2]), int(fields[19])


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Sends `sig` to every process of group `pgid`; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def terminate_group(
    pgid: int,
    grace: float,
    *,
    reap: Callable[[], object] = lambda: None,
    sleep: Sleep = asyncio.sleep,
    poll_interval: float = 0.02,
) -> bool:
    """SIGTERM to group `pgid`, up to `grace` seconds, then SIGKILL; returns once it is gone.

    `reap` is called while waiting (``Popen.poll`` of our own child, so it does not linger as a
    zombie). Returns True when the group ended within the grace period, False when it had to be
    killed. Idempotent: a group already gone returns True at once.
    """
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_members(pgid):
        reap()
        if time.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            await _until_gone(pgid, reap, sleep, poll_interval)
            return False
        await sleep(poll_interval)
    reap()
    return True


async def _until_gone(
    pgid: int, reap: Callable[[], object], sleep: Sleep, poll_interval: float
) -> None:
    # SIGKILL cannot be ignored; the members go as soon as the kernel schedules them.
    while group_members(pgid):
        reap()
        await sleep(poll_interval)
    reap()


def log_tail(log: pathlib.Path, lines: int = 20, limit: int = 16384) -> str:
    """The last `lines` lines of `log` (reading at most its last `limit` bytes); "" if absent."""
    try:
        with log.open("rb") as source:
            source.seek(0, os.SEEK_END)
            size = source.tell()
            source.seek(max(0, size - limit))
            data = source.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
