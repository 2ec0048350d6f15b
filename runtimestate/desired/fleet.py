"""The whole desired state, read at once: backends, models and pools with their members.

Built by `runtimestate.desired.store.load` in a fixed number of queries whatever the fleet size, and
read by the CLI, the manifest diff and the backend cycle. Pure value; lookups are indexes built
once, on first use. `key_of` lets the backend cycle tell, without looking at every model, that
what a backend should serve is what it was on the previous read.

Each pool membership carries the pool generation at which the member joined (`backends_joined`,
`models_joined`, `adapters_joined`): a member removed and added back has joined anew. The
planner's declaration keys are built from these, so editing a pool re-declares only what the
edit placed (`planview.declaration`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from runtimestate.desired import names, spec


@dataclasses.dataclass(frozen=True)
class DesiredState:
    """``backends_joined`` maps (pool, backend) and ``models_joined`` (pool, the model's key on
    Ollama) to the pool generation at which that member joined the pool. A membership
    missing from them (a state built by hand) counts as joined at the pool's generation."""

    backends: tuple[spec.Backend, ...]
    models: tuple[spec.Model, ...]
    pools: tuple[spec.Pool, ...]
    backends_joined: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    models_joined: Mapping[tuple[str, names.ModelKey], int] = dataclasses.field(
        default_factory=dict
    )
    adapters: tuple[spec.Adapter, ...] = ()
    adapters_joined: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def backends_by_name(self) -> dict[str, spec.Backend]:
        return {backend.name: backend for backend in self.backends}

    @functools.cached_property
    def models_by_canonical(self) -> dict[names.ModelKey, spec.Model]:
        return {names.key(model.name, spec.BackendType.OLLAMA): model for model in self.models}

    @functools.cached_property
    def pools_by_name(self) -> dict[str, spec.Pool]:
        return {pool.name: pool for pool in self.pools}

    @functools.cached_property
    def _models_by_backend(self) -> dict[str, tuple[spec.Model, ...]]:
        wanted: dict[str, dict[str, spec.Model]] = {name: {} for name in self.backends_by_name}
        for pool in self.pools:
            members = [
                self.models_by_canonical[names.key(m, spec.BackendType.OLLAMA)]
                for m in pool.spec.models
            ]
            for backend in pool.spec.backends:
                for model in members:
                    wanted.setdefault(backend, {})[model.name] = model
        return {
            backend: tuple(sorted(models.values(), key=lambda m: m.name))
            for backend, models in wanted.items()
        }

    def backend(self, name: str) -> spec.Backend | None:
        return self.backends_by_name.get(name)

    def model(self, name: str) -> spec.Model | None:
        """The declared model that ``name`` denotes under Ollama's comparison, if any.

        Raises `names.InvalidName` for a name that is not an Ollama reference.
        """
        names.parse_ollama(name)
        return self.models_by_canonical.get(names.key(name, spec.BackendType.OLLAMA))

    def pool(self, name: str) -> spec.Pool | None:
        return self.pools_by_name.get(name)

    def models_for(self, backend: str) -> tuple[spec.Model, ...]:
        """The models desired on ``backend``: the union of the models of all its pools."""
        return self._models_by_backend.get(backend, ())

    @functools.cached_property
    def adapters_by_name(self) -> dict[str, spec.Adapter]:
        return {adapter.name: adapter for adapter in self.adapters}

    @functools.cached_property
    def _adapters_by_backend(self) -> dict[str, tuple[spec.Adapter, ...]]:
        wanted: dict[str, dict[str, spec.Adapter]] = {}
        for pool in self.pools:
            members = [self.adapters_by_name[a] for a in pool.spec.adapters]
            for backend in pool.spec.backends:
                for adapter in members:
                    wanted.setdefault(backend, {})[adapter.name] = adapter
        return {
            backend: tuple(sorted(found.values(), key=lambda a: a.name))
            for backend, found in wanted.items()
        }

    def adapter(self, name: str) -> spec.Adapter | None:
        return self.adapters_by_name.get(name)

    def adapters_for(self, backend: str) -> tuple[spec.Adapter, ...]:
        """The adapters placed on ``backend``: the union of its pools' adapters, by name
        (whether their base model is served there is the planner's question)."""
        return self._adapters_by_backend.get(backend, ())

    @functools.cached_property
    def _pools_by_backend(self) -> dict[str, tuple[spec.Pool, ...]]:
        found: dict[str, dict[str, spec.Pool]] = {}
        for pool in self.pools:
            for backend in pool.spec.backends:
                found.setdefault(backend, {})[pool.name] = pool
        return {backend: tuple(pools.values()) for backend, pools in found.items()}

    @functools.cached_property
    def _overrides(self) -> dict[spec.BackendType, Mapping[names.ModelKey, spec.ModelSpec]]:
        overriding = [
            m.spec
            for m in self.models
            if m.spec.context_length is not None or m.spec.capabilities is not None
        ]
        return {
            kind: {names.key(value.name, kind): value for value in overriding}
            for kind in spec.BackendType
        }

    def overrides(self, kind: spec.BackendType) -> Mapping[names.ModelKey, spec.ModelSpec]:
        """Declared models with a context length or capabilities, by comparison key on a
        backend of type ``kind``. They win over what a backend reports wherever the model is
        served, whether that backend desires it or not. One mapping per type and read."""
        return self._overrides[kind]

    def pools_of_backend(self, backend: str) -> tuple[str, ...]:
        return tuple(pool.name for pool in self._pools_by_backend.get(backend, ()))

    def backend_joined(self, pool: spec.Pool, backend: str) -> int:
        """The generation of ``pool`` at which ``backend`` joined it."""
        return self.backends_joined.get((pool.name, backend), pool.meta.generation)

    def model_joined(self, pool: spec.Pool, model: names.ModelKey) -> int:
        """The generation of ``pool`` at which the model (its key on Ollama) joined it."""
        return self.models_joined.get((pool.name, model), pool.meta.generation)

    def adapter_joined(self, pool: spec.Pool, adapter: str) -> int:
        """The generation of ``pool`` at which ``adapter`` joined it."""
        return self.adapters_joined.get((pool.name, adapter), pool.meta.generation)

    def _adapter_keys(self, pool: spec.Pool) -> tuple[tuple[object, ...], ...]:
        members: list[tuple[object, ...]] = []
        for name in pool.spec.adapters:
            found = self.adapters_by_name.get(name)
            if found is None:
                members.append((name,))
                continue
            value, meta = found.spec, found.meta
            members.append(
                (name, meta.id, meta.generation, value.base_model, value.source, value.revision,
                 self.adapter_joined(pool, name))
            )  # fmt: skip
        return tuple(members)

    @functools.cached_property
    def _pool_keys(self) -> dict[str, tuple[object, ...]]:
        keys: dict[str, tuple[object, ...]] = {}
        for pool in self.pools:
            members: list[tuple[object, ...]] = []
            for name in pool.spec.models:
                wanted = names.key(name, spec.BackendType.OLLAMA)
                model = self.models_by_canonical.get(wanted)
                if model is None:
                    members.append((wanted,))
                    continue
                value, meta = model.spec, model.meta
                members.append(
                    (wanted, meta.id, meta.generation, value.name, value.context_length,
                     value.capabilities, value.vllm, value.warm, value.keep_alive, value.update,
                     self.model_joined(pool, wanted))
                )  # fmt: skip
            keys[pool.name] = (
                pool.meta.id, pool.meta.generation, tuple(members), self._adapter_keys(pool)
            )  # fmt: skip
        return keys

    def key_of(self, backend: str) -> tuple[object, ...]:
        """A value that compares equal between two reads exactly when the backend's identity,
        type and budgets (vramBytes, diskBytes), the models desired on it, their specs
        (overrides, warm, keepAlive), the adapters placed on it and their specs, and the
        declarations the planner derives (`planview.desired_models`) are the same.

        Built from ids, generations and names only (cheap to compare: no model is visited
        twice per read), so a steady fleet is recognised in O(pools) per backend.
        """
        found = self.backend(backend)
        identity = (
            (found.meta.id, found.spec.type.value, found.spec.vram_bytes, found.spec.disk_bytes)
            if found
            else None
        )
        pools = self._pools_by_backend.get(backend, ())
        return (
            identity,
            tuple(
                (self._pool_keys[pool.name], self.backend_joined(pool, backend)) for pool in pools
            ),
        )

    def pools_of_model(self, model: str) -> tuple[str, ...]:
        key = names.key(model, spec.BackendType.OLLAMA)
        return tuple(
            pool.name
            for pool in self.pools
            if any(names.key(m, spec.BackendType.OLLAMA) == key for m in pool.spec.models)
        )
