"""What the planner is given: per-backend views of desired and observed state, and jobs.

The backend cycle builds these frozen values once per cycle (from `DesiredState`, the adapters'
observations and the download queue) and hands them to `runtimestate.reconcile.plan.compute`. They
are the planner's own types on purpose: the planner must not depend on adapter modules (importing
`runtimestate.backends` pulls in httpx) nor on database rows.

Pure: imports only `spec`, `names`, `engineargs`, `desired` and `dwqueue.jobs` (all pure); no
I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from dwqueue import jobs
from runtimestate import desired as desired_state
from runtimestate.desired import engineargs, names, spec

# A node agent's instance states, as its API words them (`base.InstanceState`'s values).
STARTING = "starting"
READY = "ready"
CRASH_LOOP = "CrashLoopBackOff"
STOPPING = "stopping"


@dataclasses.dataclass(frozen=True, slots=True)
class DesiredModel:
    """A model desired on one backend. `name` is as declared (it is what gets pulled);
    `declaration` is an opaque key that changes whenever the declaration changes, so a held
    download (cancelled, permanently failed) is re-queued then and only then."""

    name: str
    declaration: str
    vllm: engineargs.VllmArgs | None = None  # a node agent's engine arguments for it
    warm: bool = False  # kept loaded where the backend can preload (`reconcile.warmth`)
    keep_alive: str | None = None  # the declared keep-alive of a warm model; None: forever

    @property
    def gpus_needed(self) -> int:
        """GPUs one instance of it holds: the declared count, else the tensor-parallel size,
        else 1 (the node agent's own default)."""
        args = self.vllm
        if args is None:
            return 1
        if args.gpus is not None:
            return args.gpus
        return args.tensor_parallel_size or 1

    @property
    def engine(self) -> str:
        """The fingerprint of the declared instance spec (`engineargs.fingerprint`)."""
        return engineargs.fingerprint(engineargs.agent_body(self.vllm))


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceView:
    """A node agent's instance: `name` is the model it serves, `weights` what it runs from,
    `state` one of `STARTING`, `READY`, `CRASH_LOOP`, `STOPPING`, `engine` the fingerprint of
    the spec it runs (`engineargs.fingerprint`; empty when the agent does not report it),
    `last_error` why it last failed."""

    name: str
    weights: str
    state: str
    engine: str
    last_error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ServedModel:
    """A model as the backend reports it (`name` in the backend's own spelling); `size` is
    its size on disk, `size_vram` the GPU memory it holds while loaded (Ollama)."""

    name: str
    loaded: bool = False
    size: int | None = None
    size_vram: int | None = None
    parent: str | None = None  # a LoRA adapter's base model (vLLM's `parent`); None: a model


@dataclasses.dataclass(frozen=True, slots=True)
class DesiredAdapter:
    """A LoRA adapter placed on one backend (issue 16): loaded under `name` where `base_model`
    is served, from `source` (a path on the server or a Hub repo id, at `revision`)."""

    name: str
    base_model: str
    source: str
    revision: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LoraRecord:
    """What llmctl knows of a backend's adapters beyond its observation: the adapters it
    loaded there (`managed`, what `prune: managed` may unload) and the loads the server
    refused that are held for now (`refused`: adapter -> why, sorted by adapter)."""

    managed: frozenset[str] = frozenset()
    refused: tuple[tuple[str, str], ...] = ()


NO_LORAS = LoraRecord()


@dataclasses.dataclass(frozen=True, slots=True)
class ObservedView:
    """A backend's model list. `stale` marks the last good list kept through the grace period
    of a failing backend: good enough to report from, never to delete or download on."""

    models: tuple[ServedModel, ...]
    stale: bool = False
    instances: tuple[InstanceView, ...] = ()  # a node agent's; `models` are its weights
    gpus_free: int | None = None  # a node agent's GPUs no instance holds; None: not reported


@dataclasses.dataclass(frozen=True, slots=True)
class Capacity:
    """A backend's disk, for admitting pulls (issue 16; `runtimestate.reconcile.admission`).

    `total` is the declared (`BackendSpec.disk_bytes`) or reported size of the disk, `free` the
    bytes left now: the agent's report, else `total` less the sizes of installed models and of
    the downloads under way. `sizes` are the known sizes of desired models that are missing,
    as (model key, bytes), sorted; a model without one is pulled as before, unadmitted.
    """

    total: int
    free: int
    sizes: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class BackendView:
    """One declared backend: its policy, what it can do, what is desired and what is seen.

    `in_pool` is False for a backend that belongs to no pool: it is observed only (DESIGN
    section 3), so nothing is pulled onto it or pruned from it whatever its policy; its
    `desired` is then necessarily empty. A backend in a pool whose model lists are empty is
    another case: its desired set is empty *by declaration*, and `prune: all` empties it.
    `observed` is None when this cycle's observation failed and no last good list is left.
    `runs_instances` marks a node agent: its weights are pulled and pruned like models, and
    one instance per desired model is started, restarted and stopped
    (`runtimestate.reconcile.instances`).
    Raises `ValueError` for models desired on a backend in no pool.
    """

    name: str
    type: spec.BackendType
    prune: spec.PrunePolicy = spec.PrunePolicy.MANAGED
    can_pull: bool = False
    can_delete: bool = False
    desired: tuple[DesiredModel, ...] = ()
    observed: ObservedView | None = None
    in_pool: bool = True
    runs_instances: bool = False
    # Warm models (issue 16, `reconcile.warmth`): whether the backend can preload, its
    # declared VRAM budget, the models llmctl preloaded there (by comparison key) and the
    # preloads sent whose result no observation shows yet.
    can_preload: bool = False
    vram_bytes: int | None = None
    preloaded: frozenset[str] = frozenset()
    pending: frozenset[str] = frozenset()
    adapters: tuple[DesiredAdapter, ...] = ()  # placed here (issue 16)
    can_load_lora: bool = False  # vLLM, node agents: adapters loaded at run time
    capacity: Capacity | None = None  # admission (issue 16); None: pulls are not admitted

    def __post_init__(self) -> None:
        if self.desired and not self.in_pool:
            raise ValueError(f"backend {self.name} is in no pool, yet models are desired on it")


@dataclasses.dataclass(frozen=True, slots=True)
class JobView:
    """A download job: the active ones, and the latest finished one per (backend, model).

    `model_key` is the canonical key the planner gave in `steps.Pull.model_key`; `declaration`
    is the `DesiredModel.declaration` the job was queued for.
    """

    job_id: str
    backend: str
    model: str
    model_key: str
    state: jobs.JobState
    declaration: str
    error_class: jobs.ErrorClass | None = None

    @property
    def active(self) -> bool:
        return self.state in jobs.ACTIVE_STATES

    @classmethod
    def of(cls, job: jobs.Job) -> JobView:
        return cls(
            job.id, job.backend, job.model, job.model_key, job.state, job.declaration,
            job.error_class,
        )  # fmt: skip


def declaration(
    backend: spec.Backend, model: spec.Model, placings: Iterable[tuple[spec.Pool, int]]
) -> str:
    """The declaration key of ``model`` on ``backend``.

    ``placings`` are the pools that place the model on the backend, each with the pool
    generation at which that placing began: the later of the backend's and the model's joins
    (`DesiredState.backend_joined`, `model_joined`). The key is formed from the backend's id (a
    re-created backend is a new declaration), the model's id and generation (any edit of the
    model), and each placing pool's id with that generation. Removing the model or the backend
    from a pool and adding it back is a new declaration, so a download the reconciler cancelled
    on removal is queued again; adding or removing *other* members leaves the key alone, so a
    download a user cancelled stays held. The backend's own generation is left out too: editing
    its labels or prune policy must not restart a download a user cancelled.
    """
    parts = [f"b{backend.meta.id}", f"m{model.meta.id}.{model.meta.generation}"]
    parts += sorted(f"p{pool.meta.id}.{since}" for pool, since in placings)
    return "/".join(parts)


def desired_models(state: desired_state.DesiredState, backend: str) -> tuple[DesiredModel, ...]:
    """The models desired on ``backend`` with their declaration keys; () for an unknown one."""
    found = state.backend(backend)
    if found is None:
        return ()
    pools = [state.pools_by_name[name] for name in state.pools_of_backend(backend)]
    members = [
        (
            pool,
            state.backend_joined(pool, backend),
            {names.key(m, spec.BackendType.OLLAMA) for m in pool.spec.models},
        )
        for pool in pools
    ]
    result = []
    for model in state.models_for(backend):
        wanted = names.key(model.name, spec.BackendType.OLLAMA)
        placings = [
            (pool, max(joined, state.model_joined(pool, wanted)))
            for pool, joined, models in members
            if wanted in models
        ]
        result.append(
            DesiredModel(
                model.name,
                declaration(found, model, placings),
                model.spec.vllm,
                model.spec.warm,
                model.spec.keep_alive,
            )
        )
    return tuple(result)


def backend_view(
    state: desired_state.DesiredState,
    backend: spec.Backend,
    observed: ObservedView | None,
    *,
    can_pull: bool,
    can_delete: bool,
    runs_instances: bool = False,
    can_preload: bool = False,
    preloaded: frozenset[str] = frozenset(),
    pending: frozenset[str] = frozenset(),
    can_load_lora: bool = False,
) -> BackendView:
    """The planner's view of one declared backend, given what was observed of it and what
    its adapter declares it can do (`runtimestate.backends.capabilities`, which this pure
    module cannot import: the adapter package brings httpx)."""
    return BackendView(
        name=backend.name,
        type=backend.spec.type,
        prune=backend.spec.prune,
        can_pull=can_pull,
        can_delete=can_delete,
        desired=desired_models(state, backend.name),
        observed=observed,
        in_pool=bool(state.pools_of_backend(backend.name)),
        runs_instances=runs_instances,
        can_preload=can_preload,
        vram_bytes=backend.spec.vram_bytes,
        preloaded=preloaded,
        pending=pending,
        adapters=tuple(
            DesiredAdapter(a.name, a.spec.base_model, a.spec.source, a.spec.revision)
            for a in state.adapters_for(backend.name)
        ),
        can_load_lora=can_load_lora,
    )
