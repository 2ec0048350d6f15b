"""The text of declarative files: their bytes decoded and parsed into raw documents.

Called by `runtimestate.desired.manifest` (``apply -f``) and `runtimestate.desired.deletion`
(``delete -f``) for every file they are given. A YAML file holds documents separated by
``---``; a JSON file (``.json``) holds one document, a list of them, or Kubernetes' ``kind:
List`` with ``items``. Errors say where the text stops being valid, never echoing it uncut.
Pure: it takes the bytes the CLI read and never opens a file itself.
"""

from __future__ import annotations

import codecs
import dataclasses
import json as jsonlib
from typing import Any

import yaml

from runtimestate import echo

STDIN = "<stdin>"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass(frozen=True)
class Source:
    """One file as read: the name its problems are reported under, and its bytes."""

    name: str
    data: bytes | str
    json: bool = False


def decode(data: bytes) -> str:
    """The text of a file's bytes; raises `ValueError` saying why they are not UTF-8 text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise ValueError(
            "is not UTF-8 text (it looks like UTF-16 or binary); save it as UTF-8, "
            "e.g. iconv -f UTF-16 -t UTF-8"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def load(data: bytes | str, *, json: bool = False) -> list[Any]:
    """The raw documents of a file, in order; raises `ValueError` saying what is wrong."""
    text = data if isinstance(data, str) else decode(data)
    return _json(text) if json else _yaml(text)


def _yaml(text: str) -> list[Any]:
    try:
        # libyaml when it is there: the pure-Python loader takes seconds per megabyte.
        return [raw for raw in yaml.load_all(text, Loader=_LOADER) if raw is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ValueError(f"is not valid YAML{where}: {echo.plain(str(problem))}") from None


def _json(text: str) -> list[Any]:
    if not text.strip():
        return []
    try:
        value = jsonlib.loads(text)
    except jsonlib.JSONDecodeError as exc:
        raise ValueError(
            f"is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value.get("kind") == "List" and "items" in value:
        items = value["items"]
        if not isinstance(items, list):
            raise ValueError("is a List whose items is not a list of documents")
        return items
    return [value]
