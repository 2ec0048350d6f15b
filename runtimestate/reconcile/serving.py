"""Where a node agent's models are served: its instances as the snapshot shows them, and the
URL each model is reached at.

A node backend's URL is its agent, which serves no model itself: a model is reached at the
``base_url`` of its ready instance (``http://host:port/v1``). Called by `conditions.build` when
it builds a backend's state; every other backend type has no instances, so nothing changes for
them. Pure: observation values in, snapshot values out; must not decide what runs (the planner).
"""

from __future__ import annotations

from collections.abc import Iterable

from runtimestate import snapshot
from runtimestate.backends import base


def views(instances: Iterable[base.ObservedInstance]) -> tuple[snapshot.InstanceView, ...]:
    """The instances as status shows them, by name."""
    return tuple(
        snapshot.InstanceView(
            name=i.name,
            state=i.state.value,
            base_url=i.base_url,
            gpus=i.gpus,
            restarts=i.restarts,
            last_error=i.last_error,
            log_tail=i.log_tail,
        )
        for i in sorted(instances, key=lambda i: i.name)
    )


def urls(instances: Iterable[base.ObservedInstance]) -> dict[str, str]:
    """Model name -> the base URL of its ready instance; a model without one is absent.

    An instance is named after the model it serves (its served model name), which is also the
    name of the weights it runs from; either name finds it, the instance's own first.
    """
    ready = [i for i in instances if i.state is base.InstanceState.READY]
    found = {a: i.base_url for i in ready for a in i.adapters}  # LoRA adapters: their instance
    found.update({i.weights: i.base_url for i in ready if i.weights})
    found.update({i.name: i.base_url for i in ready})
    return found
