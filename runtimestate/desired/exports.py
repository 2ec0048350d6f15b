"""Exporting the desired state as an apply-able file: ``llmctl export``.

Called by `runtimestate.desired.manifest` (which names it `manifest.export`) for the CLI. Every
kind in file order (backends, models, adapters, pools), each field written the way `documents`
reads it, so applying an export changes nothing; optional fields only when set, and never a
key. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from runtimestate import credentials, desired
from runtimestate.desired import documents, engineargs, spec, updatepolicy

API_VERSION = documents.API_VERSION

Cut = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def export(state: desired.DesiredState, cut: Cut | None = None) -> str:
    """The desired state as an apply-able file; applying it changes nothing. Never a key.

    ``cut`` chooses which of the documents are written (`runtimestate.desired.excerpt`)."""
    docs: list[dict[str, Any]] = []
    for backend in state.backends:
        b = backend.spec
        body: dict[str, Any] = {
            "type": b.type.value,
            "url": b.url,
            "prune": b.prune.value,
            "maxPulls": b.max_pulls,
        }
        if b.credentials is not None:
            body["credentials"] = (
                {"env": b.credentials.env_var}
                if b.credentials.kind is credentials.CredentialKind.ENV
                else {"encrypted": True}
            )
        _budgets(body, b)
        docs.append(_doc("Backend", _metadata(b.name, b.labels), body))
    for model in state.models:
        m = model.spec
        body = {}
        if m.context_length is not None:
            body["contextLength"] = m.context_length
        if m.capabilities is not None:
            body["capabilities"] = [c.value for c in m.capabilities]
        if m.vllm is not None:
            body["vllm"] = engineargs.document(m.vllm)
        if m.warm:
            body["warm"] = True
        if m.keep_alive is not None:
            body["keepAlive"] = m.keep_alive
        if m.update != updatepolicy.DEFAULT:
            body["updatePolicy"] = m.update.policy.value
            body["maxUnavailable"] = m.update.max_unavailable
        docs.append(_doc("Model", _metadata(m.name, m.labels), body))
    for adapter in state.adapters:
        a = adapter.spec
        body = {"baseModel": a.base_model, "source": a.source}
        if a.revision is not None:
            body["revision"] = a.revision
        docs.append(_doc("Adapter", _metadata(a.name, a.labels), body))
    for pool in state.pools:
        p = pool.spec
        body = {"purpose": p.purpose, "backends": list(p.backends), "models": list(p.models)}
        if p.adapters:
            body["adapters"] = list(p.adapters)
        docs.append(_doc("Pool", _metadata(p.name, p.labels), body))
    return yaml.safe_dump_all(
        docs if cut is None else cut(docs), sort_keys=False, explicit_start=True
    )


def _metadata(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A document's metadata: its name, and its labels when it has any."""
    return {"name": name, "labels": dict(labels)} if labels else {"name": name}


def _doc(kind: str, meta: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": body}


def _budgets(body: dict[str, Any], value: spec.BackendSpec) -> None:
    """A backend's declared budgets, in bytes, when it has them."""
    if value.vram_bytes is not None:
        body["vramBytes"] = value.vram_bytes
    if value.disk_bytes is not None:
        body["diskBytes"] = value.disk_bytes
