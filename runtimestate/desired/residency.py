"""Validation of what issue 16 declares: adapters, warm models' keep-alive, backends' budgets.

Called by `runtimestate.desired.spec`'s validators' callers (the store, the files and the CLI)
before anything is written, so a bad value is refused with a message naming the field and what
would be valid. Pure: no I/O; it knows nothing of what is stored (the store checks that an
adapter's base model is declared and that adapter and model names do not clash).

Decisions, documented in the README:

- An adapter's name is what a client sends as ``model`` and what vLLM lists in ``/v1/models``:
  1 to 255 letters, digits, ``_``, ``-`` and ``.``, starting with a letter or digit. No ``/``
  nor ``:``, so it can never be read as a model reference or a Hugging Face repo id.
- A source is an absolute path on the node (no ``..`` segment) or a Hugging Face repo id
  ``org/name``; a revision (branch, tag or commit) only goes with a repo id.
- keepAlive takes Ollama's forms: a Go duration (``5m``, ``1h30m``, ``-1m``), a whole number of
  seconds, or ``-1`` (forever). ``0`` would unload at once, so a warm model refuses it.
- Sizes are whole bytes, or a number with a unit: ``kB``/``MB``/``GB``/``TB`` (powers of 1000)
  or ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024), e.g. ``24GiB``.
"""

from __future__ import annotations

import dataclasses
import decimal
import re

from runtimestate import echo
from runtimestate.desired import spec

MAX_SIZE = 2**62  # a BIGINT holds it; no disk or GPU is near
_ADAPTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
_REPO = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,254}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DURATION = re.compile(r"^-?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
_SECONDS = re.compile(r"^-?[0-9]{1,12}$")
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$")
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def adapter_name(value: str) -> str:
    if not isinstance(value, str) or not _ADAPTER.match(value):
        raise spec.SpecError(
            "name",
            f"adapter name {echo.quoted(value)} must be 1 to 255 letters, digits, '_', '-' or "
            "'.', starting with a letter or digit (e.g. sql-lora)",
        )
    return value


def source(value: str) -> str:
    """An absolute path on the node, or a Hugging Face repo id ``org/name``."""
    hint = "give an absolute path on the node (/adapters/sql) or a repo id (org/name)"
    if not isinstance(value, str) or not value or _CONTROL.search(value) or len(value) > 4096:
        raise spec.SpecError("source", f"{echo.quoted(value)} is not a path or repo id; {hint}")
    if ".." in value.split("/"):
        raise spec.SpecError("source", f"{echo.quoted(value)} must not contain '..'; {hint}")
    if value.startswith("/") or _REPO.match(value):
        return value.rstrip("/") if value != "/" else value
    raise spec.SpecError("source", f"{echo.quoted(value)} is not a path or repo id; {hint}")


def revision(value: str | None, of_source: str) -> str | None:
    if value is None:
        return None
    if of_source.startswith("/"):
        raise spec.SpecError(
            "revision", "only a Hugging Face repo id has revisions; drop it for a path source"
        )
    if not _REVISION.match(value) or ".." in value:
        raise spec.SpecError(
            "revision",
            f"{echo.quoted(value)} is not a branch, tag or commit (e.g. main or a1b2c3d)",
        )
    return value


def keep_alive(value: str | int | None) -> str | None:
    """Ollama's keep_alive as stored: a duration string or a whole number of seconds."""
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str) and (_DURATION.match(text) or _SECONDS.match(text)):
        if text.lstrip("-").strip("0.nsuµmh") == "":
            raise spec.SpecError("keepAlive", "0 unloads at once; give a duration such as 30m")
        return text
    raise spec.SpecError(
        "keepAlive",
        f"{echo.quoted(value)} is not a duration (5m, 1h30m), a number of seconds or -1 (forever)",
    )


def size(value: str | int | None, field: str) -> int | None:
    """Bytes from a whole number or ``24GiB``/``20GB``; None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    else:
        found = _SIZE.match(value.strip()) if isinstance(value, str) else None
        unit = _UNITS.get(found.group(2).lower()) if found else None
        if found is None or unit is None:
            raise spec.SpecError(
                field, f"{echo.quoted(value)} is not a size (bytes, or e.g. 24GiB or 20GB)"
            )
        count = int(decimal.Decimal(found.group(1)) * unit)
    if not 1 <= count <= MAX_SIZE:
        raise spec.SpecError(field, f"{echo.quoted(value)} must be a positive size")
    return count


def validate_pool(value: spec.PoolSpec) -> spec.PoolSpec:
    """`spec.validate_pool`, and the pool's adapters: valid names, sorted, each once."""
    for name in value.adapters:
        adapter_name(name)
    return dataclasses.replace(
        spec.validate_pool(value), adapters=tuple(sorted(set(value.adapters)))
    )


def validate_adapter(value: spec.AdapterSpec) -> spec.AdapterSpec:
    """Return ``value`` with every field validated; raises `spec.SpecError`."""
    checked = source(value.source)
    return dataclasses.replace(
        value,
        name=adapter_name(value.name),
        base_model=_base_model(value.base_model),
        source=checked,
        revision=revision(value.revision, checked),
        labels=spec.labels(value.labels),
    )


def _base_model(value: str) -> str:
    try:
        return spec.model_name(value)
    except spec.SpecError as exc:
        raise spec.SpecError("baseModel", exc.message) from None


def validate_model(value: spec.ModelSpec) -> spec.ModelSpec:
    """`spec.validate_model`, and the model's warm and keepAlive."""
    value = spec.validate_model(value)
    if not isinstance(value.warm, bool):
        raise spec.SpecError("warm", "must be true or false")
    return dataclasses.replace(value, keep_alive=keep_alive(value.keep_alive))


def validate_backend(value: spec.BackendSpec) -> spec.BackendSpec:
    """`spec.validate_backend`, and the backend's vramBytes and diskBytes."""
    return dataclasses.replace(
        spec.validate_backend(value),
        vram_bytes=size(value.vram_bytes, "vramBytes"),
        disk_bytes=size(value.disk_bytes, "diskBytes"),
    )
