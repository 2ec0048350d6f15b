"""One instance of a model server as the supervisor tracks it, and the status it reports.

`Instance` is the supervisor's mutable bookkeeping of one ``vllm serve`` process (its argv, the
host it binds and the host it is advertised under, port, GPUs, pid and process group, state,
restarts and last error); `InstanceStatus` is the frozen
view `nodeagent.instances.Supervisor.list` returns to the agent's HTTP layer; `State` is where
an instance is in its life. Only `nodeagent.instances` mutates an `Instance`. No I/O here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import pathlib
import subprocess

from nodeagent import addresses, command, record

WILDCARDS = addresses.WILDCARDS


class State(enum.StrEnum):
    """Where an instance is in its life."""

    STARTING = "starting"
    READY = "ready"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    STOPPING = "stopping"


@dataclasses.dataclass(frozen=True)
class InstanceStatus:
    """What `list` reports of one instance; `base_url` is what an OpenAI client takes.

    `host` is the address the instance binds; `base_url` carries the advertised host.

    `argv` and `spec` have their ``--api-key`` values masked; the real one is only in the 0600
    record. `spec` is what it was started with (None for an instance adopted from a previous agent
    until a start with the same argv names it again).
    """

    name: str
    path: str
    state: State
    host: str
    port: int
    base_url: str
    gpus: tuple[int, ...]
    pid: int | None
    restarts: int
    last_error: str | None
    log_tail: str | None
    argv: tuple[str, ...]
    started_at: float
    adopted: bool
    spec: command.ModelSpec | None = None


@dataclasses.dataclass
class Instance:
    name: str
    path: str
    argv: tuple[str, ...]
    host: str
    port: int
    gpus: tuple[int, ...]
    log: pathlib.Path
    spec: command.ModelSpec | None = None  # None for an adopted instance
    advertise: str | None = None  # the host in base_url; None: where the probes connect
    proc: subprocess.Popen[bytes] | None = None  # None for an adopted (not our child) process
    pid: int | None = None
    pgid: int | None = None
    proc_start: int = 0
    started_at: float = 0.0
    state: State = State.STARTING
    restarts: int = 0
    crashes: tuple[float, ...] = ()
    last_error: str | None = None
    log_tail: str | None = None
    adopted: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where the agent's probes reach the instance (a wildcard on loopback)."""
        return addresses.url(addresses.probed(self.host), self.port)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible URL other hosts are given: the advertised host."""
        advertised = self.advertise or addresses.probed(self.host)
        return f"{addresses.url(advertised, self.port)}/v1"

    def status(self) -> InstanceStatus:
        return InstanceStatus(
            name=self.name,
            path=self.path,
            state=self.state,
            host=self.host,
            port=self.port,
            base_url=self.base_url,
            gpus=self.gpus,
            pid=self.pid,
            restarts=self.restarts,
            last_error=self.last_error,
            log_tail=self.log_tail,
            argv=command.redacted(self.argv),
            started_at=self.started_at,
            adopted=self.adopted,
            spec=None if self.spec is None else command.shown(self.spec),
        )

    def to_record(self) -> record.InstanceRecord | None:
        if self.pid is None or self.pgid is None:
            return None
        return record.InstanceRecord(
            name=self.name,
            path=self.path,
            host=self.host,
            port=self.port,
            pid=self.pid,
            pgid=self.pgid,
            proc_start=self.proc_start,
            gpus=self.gpus,
            argv=self.argv,
            log=str(self.log),
            started_at=self.started_at,
        )
