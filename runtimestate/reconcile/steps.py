"""The planner's vocabulary: the actions a plan holds, each with a reason, and their order.

`Pull`, `CancelJob`, `Prune`, the node agents' `StartInstance`, `RestartInstance` and
`StopInstance`, Ollama's warm-model `Preload` and `Unload`, and vLLM's `LoadAdapter` and
`UnloadAdapter` (LoRA) change something; `ReportDrift` and `Hold` inform (status conditions,
dry runs). Every action names its backend and model and carries a `Reason` (a stable
`ReasonCode` and a human text); `describe()` is its one line in ``reconcile --dry-run``.
`order` sorts a plan: by backend, then kind (`_KIND_ORDER`: what frees resources first),
then model.

Built by the planner (`runtimestate.reconcile.plan` and its rules modules), applied by
`runtimestate.reconcile.execution`, shown by the conditions and the CLI. Pure values: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from runtimestate.desired import engineargs, names


class ReasonCode(enum.StrEnum):
    """Why an action is in the plan; stable codes for status conditions and logs."""

    MISSING = "missing"  # Pull: declared and not present
    DECLARATION_CHANGED = "declaration_changed"  # Pull: held before, declaration changed since
    RETRY_AFTER_FAILURE = "retry_after_failure"  # Pull: the last download failed transiently
    HELD_CANCELLED = "held_cancelled"  # Hold: cancelled at this declaration
    HELD_FAILED = "held_failed"  # Hold: failed permanently at this declaration
    BACKEND_DELETED = "backend_deleted"  # CancelJob
    BACKEND_CANNOT_PULL = "backend_cannot_pull"  # CancelJob
    NOT_IN_POOL = "not_in_pool"  # CancelJob, or drift: undeclared; the backend is observed only
    NOT_DESIRED = "not_desired"  # CancelJob
    UNDECLARED_MANAGED = "undeclared_managed"  # Prune under `managed`
    UNDECLARED = "undeclared"  # Prune under `all`
    CANNOT_PULL = "cannot_pull"  # drift: declared, not served, backend cannot download
    OBSERVATION_STALE = "observation_stale"  # drift: acting waits for a fresh observation
    CANNOT_DELETE = "cannot_delete"  # drift: undeclared, backend cannot delete
    PRUNE_NONE = "prune_none"  # drift: undeclared, policy `none`
    EMPTY_DESIRED = "empty_desired"  # drift: undeclared, nothing desired and policy not `all`
    NOT_MANAGED = "not_managed"  # drift: undeclared, llmctl did not pull it
    LOADED = "loaded"  # drift: undeclared, loaded; pruned after it unloads
    BEING_PULLED = "being_pulled"  # drift: undeclared, a job for it is active
    NO_INSTANCE = "no_instance"  # StartInstance: weights present, nothing serves them
    ENGINE_CHANGED = "engine_changed"  # RestartInstance: the declared engine arguments differ
    CRASH_LOOP = "crash_loop"  # RestartInstance: changed and crash-looping; not held back
    UNPLACEABLE = "unplaceable"  # drift: not enough free GPUs for its instance
    RESTART_WAITS = "restart_waits"  # drift: a rolling restart waits for another copy
    # Warm models (issue 16)
    WARM = "warm"  # Preload: declared warm, installed, not loaded
    NOT_WARM = "not_warm"  # Unload: preloaded by llmctl, no longer warm here
    COLD_PULLING = "cold_pulling"  # cold: a download of it is active
    COLD_NOT_INSTALLED = "cold_not_installed"  # cold: not on the node yet
    COLD_BUDGET = "cold_budget"  # cold: past the backend's VRAM budget
    COLD_PENDING = "cold_pending"  # cold: a preload was sent; no observation shows it yet
    # Adapters (issue 16)
    ADAPTER_MISSING = "adapter_missing"  # LoadAdapter: placed here, base served, not loaded
    ADAPTER_UNDECLARED = "adapter_undeclared"  # UnloadAdapter: loaded, placed nowhere here
    BASE_NOT_SERVED = "base_not_served"  # drift: placed, but its base model is not served
    CANNOT_LOAD_ADAPTERS = "cannot_load_adapters"  # drift: the backend type loads no adapters
    LOAD_REFUSED = "load_refused"  # drift: the server refused the load; held a while
    LORA_NOT_ENABLED = "lora_not_enabled"  # drift: a node's base model runs without LoRA
    # Admission (issue 16): drift, the pull's known size does not fit the backend's free disk
    INSUFFICIENT_CAPACITY = "insufficient_capacity"
    # Rolling upgrades (issue 19, `runtimestate.reconcile.rollouts`)
    UPGRADE = "upgrade"  # Pull: the copy held is older than upstream's; auto or asked for
    UPGRADE_WAITS = "upgrade_waits"  # drift: maxUnavailable copies are already out
    LAST_READY_COPY = "last_ready_copy"  # drift: upgrading it would leave no ready copy


class DriftKind(enum.StrEnum):
    DECLARED_NOT_SERVED = "declared_not_served"
    SERVED_NOT_DECLARED = "served_not_declared"
    COLD = "cold"  # declared warm, not loaded, and not preloaded this cycle
    ADAPTER_NOT_LOADED = "adapter_not_loaded"  # Adapters (issue 16)
    ADAPTER_NOT_DECLARED = "adapter_not_declared"
    UPGRADE_HELD = "upgrade_held"  # an upgrade waits (issue 19)


@dataclasses.dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pull:
    """Queue a download of `model` (as declared) onto `backend` (idempotent per model_key)."""

    backend: str
    model: str
    model_key: names.ModelKey
    declaration: str
    reason: Reason

    def describe(self) -> str:
        return f"pull {self.model} on {self.backend}: {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: str
    backend: str
    model: str
    reason: Reason

    def describe(self) -> str:
        return (
            f"cancel download {self.job_id} of {self.model} on {self.backend}: {self.reason.text}"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Prune:
    """Delete `model` (spelled as the backend reported it) from `backend`."""

    backend: str
    model: str
    reason: Reason

    def describe(self) -> str:
        return f"prune {self.model} on {self.backend}: {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class ReportDrift:
    """Informative: a difference llmctl will not (or not yet) fix; a status condition."""

    backend: str
    kind: DriftKind
    model: str
    reason: Reason

    def describe(self) -> str:
        kind = self.kind.value.replace("_", " ")
        return f"drift on {self.backend}: {self.model} {kind} ({self.reason.text})"


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """Informative: a download not re-queued until its declaration changes or a user retries."""

    backend: str
    model: str
    job_id: str
    reason: Reason

    def describe(self) -> str:
        return f"hold {self.model} on {self.backend} (job {self.job_id}): {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class StartInstance:
    """Start the instance of `model` on a node agent, from `weights`, with `vllm`."""

    backend: str
    model: str
    weights: str
    vllm: engineargs.VllmArgs | None
    reason: Reason

    def describe(self) -> str:
        return f"start instance {self.model} on {self.backend}: {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class RestartInstance:
    """Stop the instance of `model`, then start it again with the declared `vllm`."""

    backend: str
    model: str
    weights: str
    vllm: engineargs.VllmArgs | None
    reason: Reason

    def describe(self) -> str:
        return f"restart instance {self.model} on {self.backend}: {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class StopInstance:
    """Stop the instance serving `model` on a node agent (its weights stay unless pruned)."""

    backend: str
    model: str
    reason: Reason

    def describe(self) -> str:
        return f"stop instance {self.model} on {self.backend}: {self.reason.text}"


# Warm models (issue 16)
@dataclasses.dataclass(frozen=True, slots=True)
class Preload:
    """Load `model` (spelled as the backend lists it) on `backend` for `keep_alive`."""

    backend: str
    model: str
    keep_alive: str
    reason: Reason

    def describe(self) -> str:
        keep = f"keep_alive {self.keep_alive}"
        return f"preload {self.model} on {self.backend} ({keep}): {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class Unload:
    """Unload `model`, which llmctl preloaded on `backend`, and drop that record; when it is
    not `loaded` any more only the record goes."""

    backend: str
    model: str
    loaded: bool
    reason: Reason

    def describe(self) -> str:
        verb = "unload" if self.loaded else "forget the preload of"
        return f"{verb} {self.model} on {self.backend}: {self.reason.text}"


# Adapters (issue 16)


@dataclasses.dataclass(frozen=True, slots=True)
class LoadAdapter:
    """Load the LoRA `adapter` (from `source`: a path or a Hub repo id, at `revision`) on a
    `backend` serving its `base_model`."""

    backend: str
    adapter: str
    base_model: str
    source: str
    reason: Reason
    revision: str | None = None

    @property
    def model(self) -> str:
        return self.adapter  # what `order` and the conditions sort and name by

    def describe(self) -> str:
        return f"load adapter {self.adapter} on {self.backend}: {self.reason.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class UnloadAdapter:
    """Unload the LoRA `adapter` from a vLLM `backend`."""

    backend: str
    adapter: str
    reason: Reason

    @property
    def model(self) -> str:
        return self.adapter

    def describe(self) -> str:
        return f"unload adapter {self.adapter} on {self.backend}: {self.reason.text}"


Action = (
    Pull | CancelJob | Prune | ReportDrift | Hold | StartInstance | RestartInstance | StopInstance
    | Preload | Unload | LoadAdapter | UnloadAdapter
)  # fmt: skip
MUTATING: tuple[type[Action], ...] = (
    CancelJob, StopInstance, Prune, Pull, StartInstance, RestartInstance, Preload, Unload,
    UnloadAdapter, LoadAdapter,
)  # fmt: skip

# Cancel first (frees a worker), stop before prune (frees the weights), prune before pull
# (frees disk a pull may need), starts last (the GPUs stops freed). Unloads free memory
# before preloads fill it.
_KIND_ORDER: Mapping[type[Action], int] = {
    CancelJob: 0, StopInstance: 1, Unload: 1, Prune: 2, Pull: 3, StartInstance: 4,
    RestartInstance: 4, Preload: 4, Hold: 5, ReportDrift: 6,
    UnloadAdapter: 2, LoadAdapter: 4,  # an unload frees a LoRA slot a load may need
}  # fmt: skip


def order(action: Action) -> tuple[str, int, str, str]:
    """The sort key of plan order: backend, kind (`_KIND_ORDER`), model, then job or drift."""
    extra = action.job_id if isinstance(action, CancelJob | Hold) else ""
    if isinstance(action, ReportDrift):
        extra = action.kind.value
    return (action.backend, _KIND_ORDER[type(action)], action.model, extra)


# Admission (issue 16): a pull held for room is a `ReportDrift` of kind DECLARED_NOT_SERVED
# with `ReasonCode.INSUFFICIENT_CAPACITY` and the numbers in its text
# (`runtimestate.reconcile.admission`); an admitted pull keeps its kind and says what it takes.
