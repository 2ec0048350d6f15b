"""The window that rate-limits triggered cycles: at most one start per ``min_interval_s``.

`controller.scheduled.Work` asks `Throttle.wait_s` before it starts a triggered cycle and waits
that long; requests arriving meanwhile coalesce into that one start, so a flood of triggers
becomes at most one cycle per window and a real change is never dropped, only delayed to the
end of the window. Pure: it is given the time, and reads no clock and sleeps on nothing.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Throttle:
    """When the next triggered cycle may start, given when the last one started."""

    min_interval_s: float
    last_start: float | None = None

    def wait_s(self, now: float) -> float:
        """Seconds until a cycle may start at ``now`` (0: at once)."""
        if self.last_start is None:
            return 0.0
        return max(0.0, self.last_start + self.min_interval_s - now)

    def started(self, now: float) -> None:
        """Record that a cycle started at ``now``: the next window opens then."""
        self.last_start = now
