"""Output of read commands: one stable document shape, rendered as a table, JSON or YAML.

Called by the CLI commands. The JSON shape (camelCase keys, documented in the README) is a
contract with scripts: add keys, never rename or remove them. No credential is ever rendered
beyond its public description (``env:VAR`` or ``encrypted``).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Format(enum.StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    NAME = "name"


class DocFormat(enum.StrEnum):
    """The `Format`s of a command that prints one document and has no wide view (``-o``
    offers only these, so its choices and its help agree); `Format(choice)` converts."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def age(created_at: str, now: dt.datetime | None = None) -> str:
    """kubectl-style age: 45s, 12m, 3h, 5d."""
    now = now or dt.datetime.now(dt.UTC)
    return _span(int((now - dt.datetime.fromisoformat(created_at)).total_seconds()))


def until(at: str, now: dt.datetime | None = None) -> str:
    """How long until ``at``, as `age` writes it (``in 12s``); ``now`` once it has passed."""
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((dt.datetime.fromisoformat(at) - now).total_seconds())
    return "now" if seconds <= 0 else f"in {_span(seconds)}"


def _span(seconds: int) -> str:
    seconds = max(0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


RULE = "\u2500"  # the line drawn under the headers
_GAP = "   "


def write(console: Console, text: str, end: str = "\n") -> None:
    """Print ``text`` and ``end`` as they are, straight to the console's file: rich's own
    printing looks at every character, which took a third of a second for 1,000 backends."""
    console.file.write(text + end)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Rows under headers in left-aligned columns, a rule under the headers: kubectl's look.

    Plain text, never folded or cut: a pipe gets every row whole, and printing 1,000 rows takes
    milliseconds (a rich table took over a second). Ends without a newline."""
    cells = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = [_GAP.join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, RULE * len(lines[0]))
    return "\n".join(lines)


_UNITS = ("kB", "MB", "GB", "TB", "PB")


def size(count: float | None) -> str:
    """A byte count as people read it, in decimal units as Ollama and kubectl print them:
    ``512 B``, ``4.7 GB``, ``12.3 MB``, ``274 MB`` (one decimal below 100, none from 100);
    ``-`` for nothing. Tables show this; ``-o wide``, JSON and YAML keep the bytes."""
    if count is None:
        return "-"
    if count < 1000:
        return f"{int(count)} B"
    value, unit = count / 1000, _UNITS[0]
    for bigger in _UNITS[1:]:
        if round(value) < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.{1 if round(value, 1) < 100 else 0}f} {unit}"


def cell(value: Any) -> str:
    """A document value as a table cell: ``-`` for nothing, lists and maps comma-joined."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={_inner(v)}" for k, v in value.items()) or "-"
    return str(value)


def _inner(value: Any) -> str:
    """A value inside a map's cell: lists space-joined, booleans as the files write them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(_inner(v) for v in value)
    return str(value)


TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "backend": [("NAME", "name"), ("TYPE", "type"), ("PHASE", "phase"), ("READY", "ready"),
                ("PULLING", "pulling"), ("ERROR", "error")],
    "backend-wide": [("NAME", "name"), ("TYPE", "type"), ("PHASE", "phase"), ("READY", "ready"),
                     ("PULLING", "pulling"), ("ERROR", "error"), ("URL", "url"),
                     ("PRUNE", "prune"), ("MAX-PULLS", "maxPulls"), ("VRAM", "vram"),
                     ("DISK", "disk"), ("POOLS", "pools"),
                     ("GEN", "generation"), ("OBSERVED-GEN", "observedGeneration"),
                     ("LABELS", "labels")],
    "model": [("NAME", "name"), ("CONTEXT", "contextLength"), ("CAPABILITIES", "capabilities"),
              ("POOLS", "pools"), ("GEN", "generation")],
    "model-wide": [("NAME", "name"), ("CONTEXT", "contextLength"),
                   ("CAPABILITIES", "capabilities"), ("WARM", "warm"),
                   ("KEEP-ALIVE", "keepAlive"), ("POOLS", "pools"), ("GEN", "generation"),
                   ("LABELS", "labels")],
    "pool": [("NAME", "name"), ("PURPOSE", "purpose"), ("BACKENDS", "backends"),
             ("MODELS", "models"), ("GEN", "generation")],
    "pool-wide": [("NAME", "name"), ("PURPOSE", "purpose"), ("BACKENDS", "backends"),
                  ("MODELS", "models"), ("ADAPTERS", "adapters"), ("GEN", "generation"),
                  ("LABELS", "labels")],
    "key": [("NAME", "name"), ("PREFIX", "prefix"), ("MODELS", "models"), ("POOLS", "pools"),
            ("RPM", "rpm"), ("TPM", "tpm"), ("BUDGET-USD", "budgetUsd"), ("PERIOD", "period"),
            ("STATE", "state")],
    "adapter": [("NAME", "name"), ("BASE-MODEL", "baseModel"), ("SOURCE", "source"),
                ("POOLS", "pools"), ("GEN", "generation")],
    "adapter-wide": [("NAME", "name"), ("BASE-MODEL", "baseModel"), ("SOURCE", "source"),
                     ("REVISION", "revision"), ("POOLS", "pools"), ("GEN", "generation"),
                     ("LABELS", "labels")],
}  # fmt: skip


def render_list(kind: str, docs: Sequence[dict[str, Any]], fmt: Format, console: Console) -> None:
    """Print a list of documents; JSON and YAML print the list itself, name ``kind/name``s."""
    if fmt is Format.NAME:
        render_names(kind, docs, console)
        return
    if fmt in (Format.JSON, Format.YAML):
        render_one(list(docs), fmt, console)
        return
    columns = TABLE_COLUMNS.get(f"{kind}-wide" if fmt is Format.WIDE else kind, TABLE_COLUMNS[kind])
    now = dt.datetime.now(dt.UTC)
    rows = []
    for doc in docs:
        flat = (
            {**doc, **_status_cells(doc.get("status")), **_budgets(doc)}
            if kind == "backend"
            else doc
        )
        rows.append([*(cell(flat.get(key)) for _, key in columns), age(doc["createdAt"], now)])
    write(console, table([*(header for header, _ in columns), "AGE"], rows))


def _budgets(doc: dict[str, Any]) -> dict[str, Any]:
    """A backend's declared budgets as people read them (``-`` when not declared)."""
    return {"vram": size(doc.get("vramBytes")), "disk": size(doc.get("diskBytes"))}


def render_names(
    kind: str, docs: Sequence[dict[str, Any]], console: Console, key: str = "name"
) -> None:
    """``-o name``: ``kind/name`` a line (``backend/gpu-1``), as kubectl prints it; nothing else."""
    for doc in docs:
        console.out(f"{kind}/{doc[key]}", highlight=False)


def _status_cells(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {"phase": "Unknown", "ready": "-", "pulling": "-", "error": None}
    error = status["error"]
    return {
        "phase": status["phase"],
        "ready": f"{status['ready']}/{status['desired']}",
        "pulling": status["pulling"],
        "error": None if error is None else (error if len(error) <= 40 else error[:39] + "…"),
        "observedGeneration": status["observedGeneration"],
    }


def render_got(
    kind: str, doc: dict[str, Any], fmt: Format, console: Console, key: str = "name"
) -> None:
    """What a ``get`` command prints: ``kind/name`` for ``-o name``, else `render_one`."""
    if fmt is Format.NAME:
        render_names(kind, [doc], console, key)
    else:
        render_one(doc, fmt, console)


def render_one(doc: Any, fmt: Format, console: Console) -> None:
    """Print one document (or a list of them) as JSON, YAML, or ``key: value`` lines."""
    if fmt is Format.JSON:
        write(console, json.dumps(doc, indent=2))
    elif fmt is Format.YAML:
        import yaml  # only YAML output pays for it

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when built with it
        write(console, yaml.dump(doc, Dumper=dumper, sort_keys=False).rstrip())
    else:
        width = max((len(key) for key in doc), default=0)
        for key, value in doc.items():
            console.out(f"{key + ':':<{width + 1}} {cell(value)}", highlight=False)


def _downloads(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**d, "state": f"{d['state']} ({group})"}
        for group, found in status["downloads"].items()
        for d in found
    ]


def _model_rows(models: list[dict[str, Any]], wide: bool) -> list[dict[str, Any]]:
    """Observed models with their warm state: the GPU memory a loaded one holds (``VRAM``) and
    when it unloads by itself (``EXPIRES``: ``in 4m``, ``never`` past a century)."""
    shown = (lambda n: n) if wide else size
    return [
        {**m, "size": shown(m["size"]), "vram": shown(m.get("sizeVram")),
         "expires": _expires(m.get("expiresAt"))}
        for m in models
    ]  # fmt: skip


def _expires(at: str | None) -> str | None:
    if at is None:
        return None
    if dt.datetime.fromisoformat(at).year >= dt.datetime.now(dt.UTC).year + 100:
        return "never"  # Ollama's keep_alive -1
    return until(at)


def render_backend(doc: dict[str, Any], console: Console, *, wide: bool = False) -> None:
    """``backend get`` as a person reads it: the spec, then conditions, models, LoRA adapters,
    downloads, a node agent's instances; sizes human (``4.7 GB``), in bytes when ``wide``."""
    status = doc.get("status")
    render_one({k: v for k, v in doc.items() if k != "status"}, Format.TABLE, console)
    if status is None:
        console.out("status:        not observed yet (run llmctl reconcile --once or serve)")
        return
    cells = _status_cells(status)
    version = status["version"] or "-"
    console.out(f"phase:         {cells['phase']}   ready: {cells['ready']}   version: {version}")
    if disk := status.get("disk"):
        shown = {k: disk[k] if wide else size(disk[k]) for k in ("total", "used", "free")}
        console.out(f"disk:          {shown['free']} free of {shown['total']} ({disk['source']}), "
                    f"{shown['used']} used")  # fmt: skip
    sections = (
        ("CONDITION", ["type", "status", "reason", "message"], status["conditions"]),
        ("MODEL", ["name", "size", "contextLength", "loaded", "vram", "expires"],
         _model_rows(status["models"], wide)),
        ("ADAPTER", ["name", "baseModel", "loaded", "placed"], status.get("adapters", [])),
        ("DOWNLOAD", ["id", "model", "state", "percent", "error"], _downloads(status)),
        ("INSTANCE", ["name", "state", "baseUrl", "gpus", "restarts", "lastError"],
         status.get("instances", [])),
    )  # fmt: skip
    for title, keys, rows in sections:
        if rows:
            headers = [title, *(key.upper() for key in keys[1:])]
            body = ([cell(row.get(key)) for key in keys] for row in rows)
            write(console, table(headers, body))
