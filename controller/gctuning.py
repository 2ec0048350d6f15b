"""Garbage-collector settings of a controller process (`llmctl serve`, `llmctl reconcile`).

A backend cycle keeps a hundred requests or more in flight for tens of milliseconds each.
With CPython's default thresholds (a young collection every 700 net allocations) their
objects outlive two young collections, are promoted to the oldest generation, and set off a
full collection, a walk of every live object (the fleet's model objects: 150,000 at 1,000
backends x 50 models, plus the libraries'), once or twice a cycle: a third of the CPU of a
steady 1,000-backend cycle. A young generation of `YOUNG` objects lets in-flight objects die
young. Reference counting still frees every acyclic object at once; only cyclic garbage waits
a little longer, and the young generation stays a few MB. What exists when `tune` runs (the
modules, classes and functions imports made: over 100,000 objects) is moved out of every
future collection with `gc.freeze()`: it lives as long as the process, and a full collection
walks only what the controller made since.

Called once by the composition roots before any work; `benchmarks/backend_cycle.py` calls it
too, so it measures the cycle as the controller runs it. Process-wide: library code
(`runtimestate`, `dwqueue`) never calls it.
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
