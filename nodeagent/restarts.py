"""The restart policy of crashed instances: exponential backoff and CrashLoopBackOff; pure.

The supervisor (`nodeagent.instances`) keeps the times of an instance's recent crashes and asks
`Policy` how long to wait before the next start and whether the instance is crash-looping
(`crash_loop_after` crashes within `window` seconds), as Kubernetes does for containers. Times
are whatever clock the caller uses (monotonic seconds); this module reads no clock and sleeps
nowhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Policy:
    """Backoff `initial * factor**(n-1)` after the n-th recent crash, at most `maximum`."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0
    window: float = 600.0
    crash_loop_after: int = 3

    def recent(self, crashes: Sequence[float], now: float) -> tuple[float, ...]:
        """The crash times still inside the window ending at `now`."""
        return tuple(at for at in crashes if now - at <= self.window)

    def delay(self, recent_crashes: int) -> float:
        """Seconds to wait before restarting after `recent_crashes` (at least 1) crashes."""
        exponent = max(0, recent_crashes - 1)
        return float(min(self.maximum, self.initial * self.factor**exponent))

    def crash_looping(self, recent_crashes: int) -> bool:
        """Whether that many crashes within the window make a CrashLoopBackOff."""
        return recent_crashes >= self.crash_loop_after
