"""``GET /v1/models``: the models the gateway can route to now, in OpenAI's list format.

Built from the resolver's index of the current snapshot: every model (or adapter) a Ready or
Degraded backend serves and the asking key may use, once, in the order of the snapshot, as
``{"object":"list","data":[{"id","object":"model","created":0,"owned_by":"llmctl"}]}``.
Called by `application`; reads the resolver only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtimestate import resolver
from runtimestate.resolver import candidates

_ROUTABLE = (candidates.Phase.READY, candidates.Phase.DEGRADED)


def listing(r: resolver.Resolver, allowed: Callable[[str], bool]) -> dict[str, Any]:
    """The model list document of the models ``allowed`` lets through."""
    seen: set[str] = set()
    data = []
    for c in r.index().all:
        if c.phase in _ROUTABLE and c.model not in seen:
            seen.add(c.model)
            if not allowed(c.model):
                continue
            data.append({"id": c.model, "object": "model", "created": 0, "owned_by": "llmctl"})
    return {"object": "list", "data": data}
