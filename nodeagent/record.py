"""The agent's on-disk record of its instances: ``<state dir>/instances.json``.

The supervisor (`nodeagent.instances`) saves the whole record after every spawn and stop, and
loads it at start to adopt or stop what a previous agent left running. Each entry has what is
needed to recognise the process again (pid, pgid and the kernel's start time of the pid, so a
reused pid is never mistaken for ours), to reach it (host, port, served name) and to restart it
(argv, GPUs, log file). Writes are atomic (a temporary file, fsync, rename, fsync of the
directory): a crash leaves the old record or the new one, never half of one.

Knows nothing of processes or HTTP; must not delete anything but its own temporary files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

FILE_NAME = "instances.json"
VERSION = 1


class RecordError(Exception):
    """The record file exists but cannot be read as a record (configuration: fix or remove it)."""


@dataclasses.dataclass(frozen=True)
class InstanceRecord:
    """One instance as the agent last started it."""

    name: str
    path: str
    host: str
    port: int
    pid: int
    pgid: int
    proc_start: int  # /proc/<pid>/stat field 22: tells our pid from a reused one
    gpus: tuple[int, ...]
    argv: tuple[str, ...]
    log: str
    started_at: float  # wall-clock seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["gpus"] = list(self.gpus)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_json(cls, data: Any) -> InstanceRecord:
        """Parses one entry; raises `RecordError` naming the missing or wrong field."""
        if not isinstance(data, dict):
            raise RecordError(f"an instance entry is {type(data).__name__}, not an object")
        try:
            return cls(
                name=_typed(data, "name", str),
                path=_typed(data, "path", str),
                host=_typed(data, "host", str),
                port=_typed(data, "port", int),
                pid=_typed(data, "pid", int),
                pgid=_typed(data, "pgid", int),
                proc_start=_typed(data, "proc_start", int),
                gpus=tuple(int(i) for i in _typed(data, "gpus", list)),
                argv=tuple(str(a) for a in _typed(data, "argv", list)),
                log=_typed(data, "log", str),
                started_at=float(_typed(data, "started_at", (int, float))),
            )
        except (TypeError, ValueError) as exc:
            raise RecordError(str(exc)) from exc


def _typed(data: dict[str, Any], key: str, kind: Any) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"field {key!r} is missing or of the wrong type: {value!r}")
    return value


def load(state_dir: pathlib.Path) -> list[InstanceRecord]:
    """The recorded instances; an absent file means none. Raises `RecordError`."""
    path = state_dir / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise RecordError(f"expected an object with version {VERSION}")
        entries = data.get("instances")
        if not isinstance(entries, list):
            raise RecordError("'instances' is not a list")
        return [InstanceRecord.from_json(entry) for entry in entries]
    except (json.JSONDecodeError, RecordError) as exc:
        raise RecordError(
            f"{path} is not an instance record ({exc}); stop any vllm serve left running "
            "and remove the file"
        ) from exc


def save(state_dir: pathlib.Path, records: Sequence[InstanceRecord]) -> None:
    """Replaces the record with `records`, atomically; creates `state_dir` if needed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    body = {"version": VERSION, "instances": [r.to_json() for r in records]}
    text = json.dumps(body, indent=2, sort_keys=True) + "\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=state_dir)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, state_dir / FILE_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
