"""Timestamps in Go's RFC 3339 nanosecond form, as Ollama writes them.

`modified_at` and `expires_at` use the local offset, generate/chat `created_at` uses UTC with `Z`
(PROTOCOLS §1.1). Go trims trailing zeros from the fraction and writes `Z` for a zero offset.
Pure functions of an integer nanosecond time; callers pass the clock reading.
"""

from __future__ import annotations

import datetime

FOREVER_NS = 2**63 - 1  # Go's maximum time.Duration: what a negative keep_alive adds to now


def rfc3339_nano(ns: int, utc: bool = False) -> str:
    """Format `ns` nanoseconds since the epoch, e.g. `2025-05-04T17:37:44.706015396-07:00`."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    if not utc:
        moment = moment.astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    offset = moment.utcoffset() or datetime.timedelta(0)
    return text + _offset(offset)


def _offset(offset: datetime.timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return "Z"
    sign = "+" if minutes > 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"
