"""Reading a node agent's replies (API v1): weights, instances, inventory, error bodies.

The agent (``nodeagent.api``) answers JSON; this module turns its listings into `base` values
and its refusals (``{"error", "class"}``) into `runtimestate.errors`. Who calls it: the node
adapter (`runtimestate.backends.node`) only. Pure: no I/O; a reply that breaks the wire
contract raises `transport.MalformedReply`, which the adapter's guard maps.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from runtimestate import errors
from runtimestate.backends import base, transport
from runtimestate.desired import engineargs

LOG_TAIL_LINES = 5  # of a crash-looping instance's log, kept in the observation
_STATES = {state.value: state for state in base.InstanceState}
# An agent's error class (in a refusal or a pull's error line) -> the tree's class.
_CLASSES: dict[str, type[errors.LlmctlError]] = {
    "insufficient_disk": errors.InsufficientDisk,
    "permanent": errors.ModelNotFound,  # the hub said no: missing, private or gated repo
    "invalid": errors.InvalidModelName,
    "transient": errors.BackendUnavailable,
    "weights_absent": errors.ModelNotFound,
    "absent": errors.ModelNotFound,
    "unplaceable": errors.RequestRejected,
    "in_use": errors.RequestRejected,
    "conflict": errors.RequestRejected,
    "lora_disabled": errors.RequestRejected,  # the instance runs without --enable-lora
    "refused": errors.RequestRejected,  # the instance refused an adapter's files
    "not_ready": errors.BackendUnavailable,  # the instance is starting: load it later
    "start_failed": errors.ServerError,
}


def listed(payload: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The objects of ``payload[key]`` (``weights``, ``instances``, ``gpus``)."""
    items = transport.required(payload, key, f"the {key} listing")
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise transport.MalformedReply(f"{key} is not a list")
    return [transport.expect_mapping(item, f"an entry of {key}") for item in items]


def _text(entry: Mapping[str, Any], key: str, what: str) -> str:
    value = transport.required(entry, key, what)
    if not isinstance(value, str):
        raise transport.MalformedReply(f"{what}'s {key} is not a string")
    return value


def instances(payload: Mapping[str, Any], cached: Sequence[Mapping[str, Any]]) -> tuple[
    base.ObservedInstance, ...
]:  # fmt: skip
    """Every instance of ``GET /v1/instances``; ``cached`` (the weights listing) names the
    weights of an instance that does not say them (adopted from a previous agent)."""
    return tuple(_instance(entry, cached) for entry in listed(payload, "instances"))


def _instance(
    entry: Mapping[str, Any], cached: Sequence[Mapping[str, Any]]
) -> base.ObservedInstance:
    name = _text(entry, "name", "an instance")
    state = _STATES.get(_text(entry, "state", "an instance"))
    if state is None:
        raise transport.MalformedReply(f"instance {name!r} has an unknown state")
    gpus = entry.get("gpus") or []
    if not isinstance(gpus, list) or not all(isinstance(g, int) for g in gpus):
        raise transport.MalformedReply(f"instance {name!r}'s gpus is not a list of indices")
    weights = entry.get("weights")
    path = str(entry.get("path") or "")
    if not isinstance(weights, str):
        weights = _weights_at(path, cached) or ""
    folder = pathlib.PurePosixPath(path)  # a hub snapshot: .../snapshots/<commit>
    commit = folder.name if path and folder.parent.name == "snapshots" else None
    engine = entry.get("engine")
    declared: Mapping[str, Any] = engine if isinstance(engine, Mapping) else {}
    spec = {"engine": declared,
            "gpus": transport.optional_int(entry.get("gpus_requested"))}  # fmt: skip
    tail = entry.get("log_tail")
    last_error = entry.get("last_error")
    return base.ObservedInstance(
        name=name,
        weights=weights,
        state=state,
        base_url=_text(entry, "base_url", "an instance"),
        engine=engineargs.fingerprint(spec) if engine is not None else "",
        gpus=tuple(gpus),
        restarts=transport.optional_int(entry.get("restarts")) or 0,
        last_error=last_error if isinstance(last_error, str) else None,
        log_tail=tuple(tail.splitlines()[-LOG_TAIL_LINES:]) if isinstance(tail, str) else (),
        context_length=transport.optional_int(declared.get("max_model_len")),
        adapters=_adapters(entry),
        commit=commit,
    )


def _adapters(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of an instance's LoRA adapters; an older agent lists none."""
    found = entry.get("adapters")
    if not isinstance(found, list):
        return ()
    return tuple(
        a["name"] for a in found if isinstance(a, Mapping) and isinstance(a.get("name"), str)
    )


def _weights_at(path: str, cached: Sequence[Mapping[str, Any]]) -> str | None:
    """The cached weights whose directory holds ``path`` (a hub snapshot or a local dir)."""
    if not path:
        return None
    for item in cached:
        root = item.get("path")
        if isinstance(root, str) and isinstance(item.get("name"), str):
            folder = pathlib.PurePosixPath(root)
            # A hub snapshot lives in .../snapshots/<commit>: its repo folder holds them all.
            if folder.parent.name == "snapshots":
                folder = folder.parent.parent
            if pathlib.PurePosixPath(path).is_relative_to(folder):
                return str(item["name"])
    return None


def models(
    cached: Sequence[Mapping[str, Any]], running: Sequence[base.ObservedInstance]
) -> tuple[base.ObservedModel, ...]:
    """One model per cached weights: named as cached (the repo id), ``loaded`` when an
    instance runs from them, with that instance's declared context length; then each LoRA
    adapter an instance serves, loaded, with that instance (its served model) as parent."""
    in_use = {i.weights: i.context_length for i in running}
    found = []
    for item in cached:
        name = _text(item, "name", "a weights entry")
        commit = item.get("commit")
        found.append(
            base.ObservedModel(
                name=name,
                model=name,
                digest=commit if isinstance(commit, str) else None,
                size=transport.optional_int(item.get("size")),
                capabilities=base.capabilities_from_model_id(name),
                loaded=name in in_use,
                context_length=in_use.get(name),
            )
        )
    return (*found, *_served_adapters(running))


def _served_adapters(running: Sequence[base.ObservedInstance]) -> list[base.ObservedModel]:
    return [
        base.ObservedModel(
            name=adapter,
            model=adapter,
            capabilities=base.capabilities_from_model_id(inst.name),
            loaded=True,
            context_length=inst.context_length,
            details=base.ModelDetails(parent_model=inst.name),
        )
        for inst in running
        for adapter in inst.adapters
    ]


def inventory(payload: Mapping[str, Any]) -> base.GpuInventory:
    """``GET /v1/inventory`` as counts."""
    free = transport.optional_int(transport.required(payload, "free", "the inventory"))
    return base.GpuInventory(total=len(listed(payload, "gpus")), free=free or 0)


def disk(info: Mapping[str, Any]) -> base.DiskSpace | None:
    """``/v1/info``'s ``disk`` (total and free bytes), or None when it is missing or malformed."""
    found = info.get("disk")
    if not isinstance(found, Mapping):
        return None
    total, free = found.get("total"), found.get("free")
    if type(total) is int and type(free) is int and total >= 0 and free >= 0:
        return base.DiskSpace(total, free)
    return None


def refusal(status: int, body: bytes, backend: str, *, about_model: bool) -> errors.LlmctlError:
    """The error of an agent's refusal: by its ``class`` when it gives one, else by status."""
    parsed = _object(body)
    message = transport.error_message(body) or f"HTTP {status}"
    kind = parsed.get("class")
    route_missing = status in (404, 405) and kind == "invalid"  # aiohttp's own, as JSON
    if status in (401, 403):
        message = (
            f"{message}; give the backend the agent's token: llmctl backend update {backend} "
            "--api-key-env VAR (or --api-key-stdin)"
        )
    if status in (401, 403) or route_missing or not isinstance(kind, str) or kind not in _CLASSES:
        about_model = about_model and not route_missing
        return errors.from_status(status, message, backend=backend, about_model=about_model)
    if kind == "in_use" and isinstance(parsed.get("instances"), list):
        message = f"{message} (instances: {', '.join(map(str, parsed['instances']))})"
    return _CLASSES[kind](message, backend=backend, status_code=status)


def stream_error(line: Mapping[str, Any], backend: str) -> errors.LlmctlError:
    """The error of a pull's error line ``{"error", "class"}`` (after the first byte)."""
    message = str(line.get("error") or "the pull failed")
    cls = _CLASSES.get(str(line.get("class")), errors.ServerError)
    return cls(message, backend=backend)


def _object(body: bytes) -> Mapping[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, Mapping) else {}
