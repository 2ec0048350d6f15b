"""Supervision of the server processes the test harness starts.

`tests.services` uses this to run Postgres and NATS as child processes that cannot outlive the
test run: each child gets its own session (Ctrl-C in the terminal reaches pytest, which then
tears the servers down in order), a parent-death signal (if pytest is killed outright the kernel
stops the child), and everything still open at interpreter exit is closed by an atexit hook.
Scratch directories carry the owner's pid so the next run removes those a killed run left.

This module knows nothing about Postgres or NATS and must not start anything by itself.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_PR_SET_PDEATHSIG = 1
_SCRATCH_PREFIX = "llmctl-test-"
_OWNER_FILE = "owner.pid"
_libc = ctypes.CDLL(None, use_errno=True)


class ServiceUnavailable(RuntimeError):
    """A service the tests need could not be provisioned.

    Fixtures let this propagate so the affected tests error out with the message: a missing
    service is a broken environment, never a reason to skip.
    """


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a server as when the tests run as root."""

    name: str
    uid: int
    gid: int


class Closable(Protocol):
    """Anything the atexit hook can shut down."""

    def close(self) -> None: ...


_open: dict[int, Closable] = {}


def track(service: Closable) -> None:
    """Closes `service` at interpreter exit unless `untrack` is called first."""
    _open[id(service)] = service


def untrack(service: Closable) -> None:
    """Forgets `service`; idempotent."""
    _open.pop(id(service), None)


@atexit.register
def _close_everything() -> None:
    for service in list(_open.values()):
        service.close()


def free_port() -> int:
    """Returns a loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def unprivileged_user() -> RunAs | None:
    """The account to drop to when running as root (`postgres`, else `nobody`); None otherwise.

    Raises ServiceUnavailable when we are root and neither account exists.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise ServiceUnavailable("running as root but neither a 'postgres' nor a 'nobody' user exists")


def make_scratch_dir(kind: str) -> Path:
    """Creates an empty temp directory for one server, first removing ones a killed run left."""
    _sweep_abandoned_scratch_dirs()
    path = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{kind}-"))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


def _sweep_abandoned_scratch_dirs() -> None:
    for path in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _is_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn(
    argv: list[str], *, cwd: Path, log: Path, run_as: RunAs | None
) -> subprocess.Popen[bytes]:
    """Starts a server child process with stdout and stderr appended to `log`.

    The child dies with this thread (only the main thread arms the parent-death signal: a worker
    thread ending would otherwise kill a server the session still needs).
    """
    with log.open("ab") as sink:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if _on_main_thread() else None,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )


def run(argv: list[str], *, cwd: Path, run_as: RunAs | None, what: str) -> str:
    """Runs a short command to completion; raises ServiceUnavailable with its output on failure."""
    result = subprocess.run(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    if result.returncode != 0:
        raise ServiceUnavailable(
            f"{what} failed with exit code {result.returncode}: {' '.join(argv)}\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    # Runs in the child after the uid switch (a switch would clear the setting).
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, grace: float = 15.0) -> None:
    """Sends `sig`, waits up to `grace` seconds, then SIGKILLs; returns once the child is reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def wait_until(
    ready: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout: float = 60.0,
) -> None:
    """Polls `ready` until true; raises ServiceUnavailable if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        code = proc.poll()
        if code is not None:
            raise ServiceUnavailable(
                f"{what} exited with code {code} before it was ready\n{tail(log)}"
            )
        if time.monotonic() > deadline:
            terminate(proc, signal.SIGKILL)
            raise ServiceUnavailable(f"{what} was not ready after {timeout:.0f}s\n{tail(log)}")
        time.sleep(0.02)


def tail(log: Path, lines: int = 40) -> str:
    """The last `lines` lines of a server log, for error messages."""
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {log}: {exc})"
    return f"--- last lines of {log} ---\n" + "\n".join(text.splitlines()[-lines:])
