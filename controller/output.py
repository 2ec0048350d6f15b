"""Output of read commands: one stable document shape, rendered as a table, JSON or YAML.

Called by the CLI commands. The JSON shape (camelCase keys, documented in the README) is a
contract with scripts: add keys, never rename or remove them. No credential is ever rendered
beyond its public description (``env:VAR`` or ``encrypted``).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Sequence
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from runtimestate import desired, spec


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _meta(meta: spec.Meta) -> dict[str, Any]:
    return {
        "generation": meta.generation,
        "createdAt": _time(meta.created_at),
        "updatedAt": _time(meta.updated_at),
    }


def backend_doc(backend: spec.Backend, state: desired.DesiredState) -> dict[str, Any]:
    s = backend.spec
    return {
        "name": s.name,
        "type": s.type.value,
        "url": s.url,
        "labels": dict(s.labels),
        "prune": s.prune.value,
        "maxPulls": s.max_pulls,
        "credentials": None if s.credentials is None else s.credentials.describe(),
        "pools": list(state.pools_of_backend(s.name)),
        **_meta(backend.meta),
    }


def model_doc(model: spec.Model, state: desired.DesiredState) -> dict[str, Any]:
    s = model.spec
    return {
        "name": s.name,
        "contextLength": s.context_length,
        "capabilities": None if s.capabilities is None else [c.value for c in s.capabilities],
        "pools": list(state.pools_of_model(s.name)),
        **_meta(model.meta),
    }


def pool_doc(pool: spec.Pool) -> dict[str, Any]:
    s = pool.spec
    return {
        "name": s.name,
        "purpose": s.purpose,
        "backends": list(s.backends),
        "models": list(s.models),
        **_meta(pool.meta),
    }


def age(created_at: str, now: dt.datetime | None = None) -> str:
    """kubectl-style age: 45s, 12m, 3h, 5d."""
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0, int((now - dt.datetime.fromisoformat(created_at)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "backend": [("NAME", "name"), ("TYPE", "type"), ("URL", "url"), ("PRUNE", "prune"),
                ("MAX-PULLS", "maxPulls"), ("POOLS", "pools"), ("GEN", "generation")],
    "model": [("NAME", "name"), ("CONTEXT", "contextLength"), ("CAPABILITIES", "capabilities"),
              ("POOLS", "pools"), ("GEN", "generation")],
    "pool": [("NAME", "name"), ("PURPOSE", "purpose"), ("BACKENDS", "backends"),
             ("MODELS", "models"), ("GEN", "generation")],
}  # fmt: skip


def render_list(kind: str, docs: Sequence[dict[str, Any]], fmt: Format, console: Console) -> None:
    """Print a list of documents; JSON and YAML print the list itself."""
    if fmt is not Format.TABLE:
        render_one(list(docs), fmt, console)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    columns = TABLE_COLUMNS[kind]
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    table.add_column("AGE")
    for doc in docs:
        table.add_row(*[_cell(doc.get(key)) for _, key in columns], age(doc["createdAt"]))
    console.print(table)


def render_one(doc: Any, fmt: Format, console: Console) -> None:
    """Print one document (or a list of them) as JSON, YAML, or ``key: value`` lines."""
    if fmt is Format.JSON:
        console.out(json.dumps(doc, indent=2), highlight=False)
    elif fmt is Format.YAML:
        console.out(yaml.safe_dump(doc, sort_keys=False).rstrip(), highlight=False)
    else:
        width = max((len(key) for key in doc), default=0)
        for key, value in doc.items():
            console.out(f"{key + ':':<{width + 1}} {_cell(value)}", highlight=False)
