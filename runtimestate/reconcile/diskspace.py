"""A backend's disk as its status shows it: where the figure comes from, used and free bytes.

`view` is what `runtimestate.reconcile.conditions.build` puts in `LLMState.disk` for
``backend get`` (issue 16): a node agent's reported disk (``/v1/info``), else the declared
`BackendSpec.disk_bytes` less the observed sizes of installed models and the totals of the
downloads under way. The admission rule itself reads `planview.Capacity`
(`runtimestate.reconcile.capacity`), which adds the registry's sizes where a model's is not
observed. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from dwqueue import jobs as dwjobs
from runtimestate import snapshot
from runtimestate.backends import base
from runtimestate.desired import spec


def view(
    backend: spec.Backend, observation: base.Observation | None, found: Iterable[dwjobs.Job]
) -> snapshot.DiskView | None:
    """The disk of ``backend`` given its usable observation and its jobs; None when neither
    declared nor reported."""
    reported = observation.disk if observation is not None else None
    if reported is not None:
        used = max(reported.total - reported.free, 0)
        return snapshot.DiskView("reported", reported.total, used, reported.free)
    total = backend.spec.disk_bytes
    if total is None:
        return None
    used = sum(m.size or 0 for m in observation.models) if observation is not None else 0
    used += sum(j.progress.total or 0 for j in found if j.active)
    return snapshot.DiskView("declared", total, used, total - used)
