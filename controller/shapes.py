"""The JSON shape of each kind as the CLI shows it: backends with their observed status,
models, pools and adapters.

Called by the read commands (``get``, ``list``, ``export`` does not: it writes specs) before
`controller.output` renders a document as a table, JSON or YAML. The shape (camelCase keys,
documented in the README) is a contract with scripts: add keys, never rename or remove them.
No credential is rendered beyond its public description (``env:VAR`` or ``encrypted``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from runtimestate.desired import engineargs, names

if TYPE_CHECKING:
    from gateway import keys, prices
    from runtimestate import desired, snapshot
    from runtimestate.desired import spec


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _meta(meta: spec.Meta) -> dict[str, Any]:
    return {
        "generation": meta.generation,
        "createdAt": _time(meta.created_at),
        "updatedAt": _time(meta.updated_at),
    }


def status_doc(
    backend: spec.Backend, state: desired.DesiredState, observed: snapshot.LLMState | None
) -> dict[str, Any] | None:
    """The observed status of a backend as the last cycle recorded it; None if never."""
    if observed is None:
        return None
    kind = backend.spec.type
    served = {names.key(m.name, kind) for m in observed.serving}
    desired_names = [m.name for m in state.models_for(backend.name)]
    ready = sum(names.key(name, kind) in served for name in desired_names)

    def downloads(views: tuple[snapshot.DownloadView, ...]) -> list[dict[str, Any]]:
        return [
            {
                "id": d.job_id,
                "model": d.model,
                "state": d.state,
                "percent": d.percent,
                "error": d.error,
            }
            for d in views
        ]

    return {
        "phase": observed.phase.value,
        "ready": ready,
        "desired": len(desired_names),
        "pulling": len(observed.downloads_pending),
        "error": observed.error,
        "observedGeneration": observed.observed_generation,
        "lastOkAt": None if observed.last_ok_at is None else _time(observed.last_ok_at),
        "version": observed.version,
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            for c in observed.conditions
        ],
        "models": [
            {
                "name": m.name,
                "size": m.size,
                "contextLength": m.context_length,
                "loaded": m.loaded,
                "baseUrl": m.base_url,
                "sizeVram": m.size_vram or None,
                "expiresAt": None if m.expires_at is None else _time(m.expires_at),
            }
            for m in observed.pulled_models
            if m.parent is None  # a LoRA adapter's card is under "adapters"
        ],
        "adapters": _adapters(observed, state),
        "instances": _instances(observed),
        "disk": None if observed.disk is None else _disk(observed.disk),
        "downloads": {
            "pending": downloads(observed.downloads_pending),
            "failed": downloads(observed.downloads_failed),
            "held": downloads(observed.downloads_held),
        },
    }


def _adapters(observed: snapshot.LLMState, state: desired.DesiredState) -> list[dict[str, Any]]:
    """LoRA adapters (issue 16): each loaded one with its base model, then each one placed
    here that is not loaded (yet: the AdaptersReady condition says why), with its declared
    base model."""
    loaded = {m.name: m.parent for m in observed.pulled_models if m.parent is not None}
    placed = set(observed.adapters)
    rows = [
        {"name": name, "baseModel": parent, "loaded": True, "placed": name in placed}
        for name, parent in sorted(loaded.items())
    ]
    rows += [
        {"name": name, "baseModel": _declared_base(state, name), "loaded": False, "placed": True}
        for name in sorted(placed - loaded.keys())
    ]
    return rows


def _declared_base(state: desired.DesiredState, name: str) -> str | None:
    adapter = state.adapter(name)
    return None if adapter is None else adapter.spec.base_model


def _disk(disk: snapshot.DiskView) -> dict[str, Any]:
    """The disk pulls are admitted against (issue 16): declared or reported, in bytes."""
    return {"source": disk.source, "total": disk.total, "used": disk.used, "free": disk.free}


def _instances(observed: snapshot.LLMState) -> list[dict[str, Any]]:
    """A node agent's ``vllm serve`` instances (empty for every other backend type)."""
    return [
        {
            "name": i.name,
            "state": i.state,
            "baseUrl": i.base_url,
            "gpus": list(i.gpus),
            "restarts": i.restarts,
            "lastError": i.last_error,
            "logTail": list(i.log_tail),
        }
        for i in observed.instances
    ]


def backend_doc(
    backend: spec.Backend,
    state: desired.DesiredState,
    observed: snapshot.LLMState | None = None,
) -> dict[str, Any]:
    s = backend.spec
    return {
        "name": s.name,
        "type": s.type.value,
        "url": s.url,
        "labels": dict(s.labels),
        "prune": s.prune.value,
        "maxPulls": s.max_pulls,
        "credentials": None if s.credentials is None else s.credentials.describe(),
        "vramBytes": s.vram_bytes,
        "diskBytes": s.disk_bytes,
        "pools": list(state.pools_of_backend(s.name)),
        **_meta(backend.meta),
        "status": status_doc(backend, state, observed),
    }


def model_doc(model: spec.Model, state: desired.DesiredState) -> dict[str, Any]:
    s = model.spec
    return {
        "name": s.name,
        "contextLength": s.context_length,
        "capabilities": None if s.capabilities is None else [c.value for c in s.capabilities],
        "labels": dict(s.labels),
        "vllm": None if s.vllm is None else engineargs.document(s.vllm),
        "warm": s.warm,
        "keepAlive": s.keep_alive,
        "updatePolicy": s.update.policy.value,
        "maxUnavailable": s.update.max_unavailable,
        "pools": list(state.pools_of_model(s.name)),
        **_meta(model.meta),
    }


def pool_doc(pool: spec.Pool) -> dict[str, Any]:
    s = pool.spec
    return {
        "name": s.name,
        "purpose": s.purpose,
        "labels": dict(s.labels),
        "backends": list(s.backends),
        "models": list(s.models),
        "adapters": list(s.adapters),
        **_meta(pool.meta),
    }


def adapter_doc(adapter: spec.Adapter, state: desired.DesiredState) -> dict[str, Any]:
    s = adapter.spec
    return {
        "name": s.name,
        "baseModel": s.base_model,
        "source": s.source,
        "revision": s.revision,
        "labels": dict(s.labels),
        "pools": [p.name for p in state.pools if s.name in p.spec.adapters],
        **_meta(adapter.meta),
    }


def _usd(micro: int | None) -> float | None:
    return None if micro is None else micro / 1_000_000


def key_doc(key: keys.Key) -> dict[str, Any]:
    """A gateway key as ``llmctl key get|list`` show it: never its secret, only its prefix."""
    value = key.spec
    return {
        "name": key.name,
        "id": key.id,
        "prefix": key.prefix,
        "models": list(value.models),
        "pools": list(value.pools),
        "rpm": value.rpm,
        "tpm": value.tpm,
        "budgetUsd": _usd(value.budget_microusd),
        "period": value.period.value,
        "policy": value.policy,
        "state": "revoked" if key.revoked else "active",
        "createdAt": _time(key.created_at),
        "revokedAt": None if key.revoked_at is None else _time(key.revoked_at),
    }


def price_doc(price: prices.Price) -> dict[str, Any]:
    """A model's price as ``llmctl price list`` shows it: USD per million tokens."""
    return {
        "model": price.model,
        "promptUsdPerMillion": _usd(price.input_microusd),
        "completionUsdPerMillion": _usd(price.output_microusd),
    }
