"""Which models a key may use: its allowed models and the models and adapters of its pools.

Called by the gateway for every request, after `gateway.keyring` found the key and before it
resolves a provider. Pure: it reads the desired state it is given (pools come from
`runtimestate.desired.DesiredState`), and does no I/O.

A model is named as requests name it. Two names are the same model when they are equal or
have the same Ollama canonical form (``llama3`` and ``llama3:latest``), as the store compares
declared models; a vLLM served name or an adapter is matched exactly.
"""

from __future__ import annotations

from gateway import keys
from runtimestate import desired
from runtimestate.desired import names, spec


def same_model(a: str, b: str) -> bool:
    """Whether two model names name the same model (see the module docstring)."""
    if a == b:
        return True
    try:
        return names.key(a, spec.BackendType.OLLAMA) == names.key(b, spec.BackendType.OLLAMA)
    except names.InvalidName:
        return False


def allows(key: keys.KeySpec, model: str, state: desired.DesiredState) -> bool:
    """Whether ``key`` may use ``model``: every model when it names neither models nor pools,
    else a model it names or a model or adapter of a pool it names (a pool that no longer
    exists allows nothing)."""
    if not key.models and not key.pools:
        return True
    if any(same_model(model, allowed) for allowed in key.models):
        return True
    pools = state.pools_by_name
    for name in key.pools:
        pool = pools.get(name)
        if pool is None:
            continue
        if model in pool.spec.adapters or any(same_model(model, m) for m in pool.spec.models):
            return True
    return False
