"""Garbage-collector settings of a long-running process (`llmctl serve`, `reconcile`, `gateway`).

`tune` raises the young generation's threshold to `YOUNG`, so the objects of requests in flight
during a backend cycle die young instead of being promoted and setting off full collections, and
freezes (`gc.freeze()`) what exists at start (modules, classes, functions), which lives as long
as the process. Reference counting still frees acyclic objects at once. The README's performance
section has the figures (`benchmarks/backend_cycle.py --default-gc` compares). In the gateway,
whose heap at start is ~130,000 objects, each full collection otherwise stopped every request
for 40--80 ms (`benchmarks/gateway.py`'s p99).

Called once by the composition roots before any work, and by `benchmarks/backend_cycle.py` so it
measures the cycle as the controller runs it. Process-wide: library code (`runtimestate`,
`dwqueue`) never calls it.
"""

from __future__ import annotations

import gc

YOUNG = 10_000


_tuned = False


def tune() -> None:
    """Raise the young-generation threshold to `YOUNG` (the older ones stay) and freeze what
    is alive now. Call it after the imports, before any work; later calls do nothing (a
    process that runs several commands, such as a test session, freezes only once)."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
    gc.collect()  # nothing already garbage is frozen
    gc.freeze()
