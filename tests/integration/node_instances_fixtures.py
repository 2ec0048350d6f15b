"""Fixtures of the node agent's instance tests: the emulated vLLM server as the instance command.

`llmctl emulate vllm` is started by the supervisor as a real process, exactly as it would start
``vllm serve``; these helpers build command templates around it, poll with a deadline, and look
at processes and ports from the outside (``/proc``, a TCP connect).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import sys
from collections.abc import Awaitable, Callable

from nodeagent import instance, instances, processes, restarts

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")
EMULATOR_ARGS = (
    "emulate",
    "vllm",
    "--host",
    "{host}",
    "--port",
    "{port}",
    "--served-model-name",
    "{name}",
    "--model",
    "{path}",
)
EMULATOR = (LLMCTL, *EMULATOR_ARGS)
FAST = restarts.Policy(initial=0.05, factor=2.0, maximum=0.4, window=60.0, crash_loop_after=3)


def settings(
    template: tuple[str, ...] = EMULATOR,
    grace: float = 3.0,
    log_limit: int = 2**20,
    host: str = "127.0.0.1",
    advertise_host: str | None = None,
) -> instances.Settings:
    """Short probes, backoffs and grace periods, so a test takes seconds."""
    return instances.Settings(
        host=host,
        advertise_host=advertise_host,
        template=template,
        policy=FAST,
        grace=grace,
        probe_interval=0.05,
        startup_probe_interval=0.02,
        probe_timeout=1.0,
        log_limit=log_limit,
    )


def shell(script: str) -> tuple[str, ...]:
    """A template running `script` in sh, then exec'ing the emulator with the rendered args."""
    return ("sh", "-c", f'{script}\nexec {LLMCTL} "$@"', "sh", *EMULATOR_ARGS)


async def eventually(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Polls `check` until it is true; fails naming `what` after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def eventually_async(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30.0
) -> None:
    """`eventually` for a check that needs the event loop (an HTTP request)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def ready(supervisor: instances.Supervisor, name: str) -> instance.InstanceStatus:
    """Waits until `name` is ready and returns its status."""

    def is_ready() -> bool:
        found = supervisor.get(name)
        return found is not None and found.state is instance.State.READY

    await eventually(is_ready, f"{name} to be ready ({supervisor.get(name)})")
    status = supervisor.get(name)
    assert status is not None
    return status


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    return processes.identity(pid) is not None


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def other_address() -> str:
    """An address of this machine other than 127.0.0.1: the one its default route leaves from,
    else one of its host name's, else 127.0.0.2 (loopback, but not what 127.0.0.1 binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: picks the route, sends nothing
            found: str = probe.getsockname()[0]
            if not found.startswith("127."):
                return found
        except OSError:
            pass
    try:
        named = socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        named = []
    return next((a for a in named if not a.startswith("127.")), "127.0.0.2")


def answers(address: str, port: int) -> bool:
    """Whether something accepts TCP connections on `address`:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def environment_of(pid: int) -> dict[str, str]:
    """The environment `pid` was started with."""
    raw = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode() for key, value in pairs}


def kill_if_alive(pid: int) -> None:
    """Best-effort cleanup of a process a failed test may leave."""
    if alive(pid):
        os.kill(pid, 9)
