"""``GET /v1/models``: the models the gateway can route to now, in OpenAI's list format.

Built from the resolver's index of the current snapshot: every model (or adapter) a Ready or
Degraded backend serves, once, in the order of the snapshot, as
``{"object":"list","data":[{"id","object":"model","created":0,"owned_by":"llmctl"}]}``.
Called by `application`; reads the resolver only.
"""

from __future__ import annotations

from typing import Any

from runtimestate import resolver
from runtimestate.resolver import candidates

_ROUTABLE = (candidates.Phase.READY, candidates.Phase.DEGRADED)


def listing(r: resolver.Resolver) -> dict[str, Any]:
    """The model list document."""
    seen: set[str] = set()
    data = []
    for c in r.index().all:
        if c.phase in _ROUTABLE and c.model not in seen:
            seen.add(c.model)
            data.append({"id": c.model, "object": "model", "created": 0, "owned_by": "llmctl"})
    return {"object": "list", "data": data}
