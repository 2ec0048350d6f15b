"""Where llmctl keeps its files on this machine: the embedded database, the embedded NATS
server's state.

``LLMCTL_DATA_DIR`` when set, else the user's data directory (platformdirs). Called by the
settings, the CLI's default database URL and the NATS trigger. Cheap to import: every CLI
command reaches it, ``--help`` included.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import platformdirs


def default() -> pathlib.Path:
    """The user's data directory for llmctl (``~/.local/share/llmctl`` on Linux)."""
    return pathlib.Path(platformdirs.user_data_dir("llmctl", appauthor=False))


def from_environment(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """``LLMCTL_DATA_DIR`` of ``environ`` (the process environment by default), else `default`."""
    value = (environ if environ is not None else os.environ).get("LLMCTL_DATA_DIR")
    return pathlib.Path(value) if value else default()
