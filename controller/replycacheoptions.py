"""The reply cache options of ``llmctl gateway``, turned into `gateway.replycache.Settings`.

``--cache-ttl SECONDS`` (0 turns the cache off), ``--cache-max-bytes SIZE`` (memory the entries
may take per replica), ``--cache-max-entry-bytes SIZE`` (the largest reply stored) and
``--cache-shared`` (one key's entries serve every key), each also read from its
``LLMCTL_GATEWAY_CACHE_*`` variable. Sizes are bytes or a number with ``KB``, ``MB``, ``GB``
(powers of 1000) or ``KiB``, ``MiB``, ``GiB`` (powers of 1024). `settings` refuses a bad value
with one line naming the option and the fix (exit 2), before anything starts. Called by
`controller.gatewaycommand`; cheap to import (typer only, the gateway inside `settings`).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated

import typer

from controller import runner

if TYPE_CHECKING:
    from gateway import replycache

TtlOpt = Annotated[
    str,
    typer.Option(
        "--cache-ttl",
        envvar="LLMCTL_GATEWAY_CACHE_TTL_S",
        help="seconds a deterministic request's reply is served from the cache (0: no cache)",
    ),
]
MaxBytesOpt = Annotated[
    str,
    typer.Option(
        "--cache-max-bytes",
        envvar="LLMCTL_GATEWAY_CACHE_MAX_BYTES",
        help="memory the cached replies may take per replica (such as 64MiB); LRU beyond",
    ),
]
MaxEntryOpt = Annotated[
    str,
    typer.Option(
        "--cache-max-entry-bytes",
        envvar="LLMCTL_GATEWAY_CACHE_MAX_ENTRY_BYTES",
        help="largest reply the cache stores (such as 1MiB)",
    ),
]
SharedOpt = Annotated[
    bool,
    typer.Option(
        "--cache-shared",
        envvar="LLMCTL_GATEWAY_CACHE_SHARED",
        help="serve one key's cached replies to every key (default: each key its own)",
    ),
]
DEFAULT_TTL = "300"
DEFAULT_MAX_BYTES = "64MiB"
DEFAULT_ENTRY_BYTES = "1MiB"

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3}


def size(text: str) -> int | None:
    """Bytes in ``text`` (``65536``, ``64MiB``, ``1.5 MB``), or None when it is not a size."""
    found = _SIZE.fullmatch(text)
    if found is None:
        return None
    unit = (found.group(2) or "").lower().rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    return int(float(found.group(1)) * base ** _POWERS[unit.rstrip("i")])


def seconds(text: str) -> float | None:
    """A non-negative, finite number of seconds in ``text``, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def settings(
    env: runner.Env, ttl: str, max_bytes: str, max_entry_bytes: str, shared: bool
) -> replycache.Settings:
    """The cache's settings; a bad value exits 2 with one line (`runner.Env.fail`)."""
    from gateway import replycache

    ttl_s = seconds(ttl)
    if ttl_s is None:
        env.fail(
            f"--cache-ttl {ttl!r} (LLMCTL_GATEWAY_CACHE_TTL_S): give the seconds a cached reply "
            "is served, such as 300, or 0 to turn the cache off"
        )
    bound = _positive(env, "--cache-max-bytes", "LLMCTL_GATEWAY_CACHE_MAX_BYTES", max_bytes)
    entry = _positive(
        env, "--cache-max-entry-bytes", "LLMCTL_GATEWAY_CACHE_MAX_ENTRY_BYTES", max_entry_bytes
    )
    if entry > bound:
        env.fail(
            f"--cache-max-entry-bytes {max_entry_bytes} is more than --cache-max-bytes "
            f"{max_bytes}: an entry must fit in the cache; lower the one or raise the other"
        )
    return replycache.Settings(ttl_s, bound, entry, shared)


def _positive(env: runner.Env, flag: str, variable: str, text: str) -> int:
    value = size(text)
    if value is None or value < 1:
        env.fail(
            f"{flag} {text!r} ({variable}): give a size of at least one byte, such as "
            "65536 or 64MiB (--cache-ttl 0 turns the cache off)"
        )
    return value
