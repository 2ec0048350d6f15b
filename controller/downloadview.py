"""How a download is shown: its figures (percent, size, rate, ETA), its document and table.

Used by the download commands (`controller.downloads`) and the live bars of `controller.watchview`.
The document's keys are stable (camelCase; add keys, never rename them). Pure formatting: no
database, no NATS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from controller import output
from dwqueue import jobs

if TYPE_CHECKING:
    from rich.console import Console


def percent_text(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.1f}%"


def rate_text(rate_bps: float | None) -> str:
    """Decimal units, as Ollama prints them: ``12.3 MB/s``."""
    return "-" if rate_bps is None else f"{output.size(rate_bps)}/s"


def bytes_text(doc: dict[str, Any], size: Callable[[int], str] = output.size) -> str:
    """Bytes done of the total: ``300 MB/1.0 GB`` (``size`` writes each count); ``-`` before
    the first progress."""
    done, total = doc["completed"], doc["total"]
    if total is None:
        return "-" if done is None else size(done)
    return f"{size(done or 0)}/{size(total)}"


def eta_text(eta_s: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``."""
    if eta_s is None:
        return "-"
    seconds = max(0, round(eta_s))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # SQLite drops the zone
    return aware.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def job_doc(job: jobs.Job) -> dict[str, Any]:
    """The stable JSON shape of a download (camelCase; add keys, never rename them)."""
    progress = job.progress
    return {
        "id": job.id,
        "backend": job.backend,
        "model": job.model,
        "state": job.state.value,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "status": progress.status,
        "digest": progress.digest,
        "completed": progress.completed,
        "total": progress.total,
        "percent": progress.percent,
        "rateBps": progress.rate_bps,
        "etaS": progress.eta_s,
        "error": job.error,
        "errorClass": None if job.error_class is None else job.error_class.value,
        "nextAttemptAt": _time(job.next_attempt_at),
        "leaseOwner": job.lease_owner,
        "leaseExpiresAt": _time(job.lease_expires_at),
        "createdAt": _time(job.created_at),
        "updatedAt": _time(job.updated_at),
        "startedAt": _time(job.started_at),
        "finishedAt": _time(job.finished_at),
    }


def _running(doc: dict[str, Any]) -> bool:
    return bool(doc["state"] == jobs.JobState.RUNNING.value)


def short_digest(digest: str | None) -> str:
    """``sha256:6a0746a1ec1a…`` as Ollama prints it while pulling: ``6a0746a1ec1a``."""
    return "-" if not digest else digest.removeprefix("sha256:")[:12]


Column = tuple[str, Callable[[dict[str, Any]], str]]
# The table's columns: what `downloads list` prints. ERROR comes last (it is long and folds).
COLUMNS: list[Column] = [
    ("ID", lambda d: d["id"]),
    ("BACKEND", lambda d: d["backend"]),
    ("MODEL", lambda d: d["model"]),
    ("STATE", lambda d: d["state"]),
    ("PROGRESS", lambda d: percent_text(d["percent"])),
    ("SIZE", lambda d: bytes_text(d)),
    ("RATE", lambda d: rate_text(d["rateBps"]) if _running(d) else "-"),
    ("ETA", lambda d: eta_text(d["etaS"]) if _running(d) else "-"),
    ("ATTEMPTS", lambda d: f"{d['attempts']}/{d['maxAttempts']}"),
    ("AGE", lambda d: output.age(d["createdAt"])),
]
# ``-o wide`` adds these before ERROR, as ``backend list -o wide`` adds its own.
WIDE_COLUMNS: list[Column] = [
    ("STATUS", lambda d: d["status"] or "-"),
    ("DIGEST", lambda d: short_digest(d["digest"])),
    ("LEASE-OWNER", lambda d: output.cell(d["leaseOwner"])),
    ("NEXT-ATTEMPT", lambda d: output.until(d["nextAttemptAt"]) if d["state"] == "queued" else "-"),
    ("ERROR-CLASS", lambda d: output.cell(d["errorClass"])),
]
_ERROR: Column = ("ERROR", lambda d: d["error"] or "-")
_BYTES: Column = ("SIZE", lambda d: bytes_text(d, str))  # -o wide: the bytes themselves


def render_list(docs: Sequence[dict[str, Any]], fmt: output.Format, console: Console) -> None:
    """Print downloads: JSON and YAML print the list itself; ``table`` and ``wide`` a table;
    ``name`` ``download/<id>`` a line."""
    if fmt is output.Format.NAME:
        output.render_names("download", docs, console, key="id")
        return
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.render_one(list(docs), fmt, console)
        return
    wide = WIDE_COLUMNS if fmt is output.Format.WIDE else []
    columns = [_BYTES if wide and c[0] == _BYTES[0] else c for c in [*COLUMNS, *wide, _ERROR]]
    rows = ([value(doc) for _, value in columns] for doc in docs)
    output.write(console, output.table([header for header, _ in columns], rows))
