"""Observing the fleet: every due backend probed at once, bounded, under one cycle deadline.

`Observer` is the backend cycle's eyes; only `runtimestate.reconcile.cycle` calls it. It keeps,
per backend, the probe record (`runtimestate.reconcile.probing`: last good list, failures,
backoff), the identity that record was made against (a new id, type, URL or credentials starts
afresh) and the generation last observed; records are seeded from the persisted status the first
time the cycle reads it, so grace and backoff survive a restart.

It must not plan, write or publish: a probe that fails becomes a failed record, never an
exception (a bug of ours is logged with its traceback and recorded as ``internal``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
from collections.abc import Collection, Iterable, Mapping, Sequence

import structlog

from runtimestate import errors, snapshot
from runtimestate.backends import adapters, base
from runtimestate.desired import spec
from runtimestate.reconcile import probing, resumption

log = structlog.get_logger(__name__)
Record = probing.Record[base.Observation]


@dataclasses.dataclass(frozen=True)
class Observed:
    started: frozenset[str]  # probes that got a slot before the deadline
    fresh: frozenset[str]  # probes that answered: only these observations are acted on


class Observer:
    def __init__(
        self,
        pool: adapters.AdapterPool,
        *,
        concurrency: int,
        deadline_s: float,
        policy: probing.Policy,
        rng: random.Random,
    ) -> None:
        """``concurrency`` backends are probed at once; ``deadline_s`` bounds the whole
        observation on the event loop's clock; ``policy`` sets grace and backoff."""
        self._pool = pool
        self._concurrency = concurrency
        self._deadline_s = deadline_s
        self.policy = policy
        self._rng = rng
        self._records: dict[str, Record] = {}
        self._generations: dict[str, int] = {}
        # What a probe record was made against: a new id, URL or credentials starts afresh.
        self._identities: dict[str, tuple[object, ...]] = {}

    def record(self, name: str) -> Record:
        """The backend's probe record (a fresh one for a backend never probed)."""
        return self._records.setdefault(name, probing.Record())

    def generation(self, name: str) -> int:
        """The backend's spec generation its last answered probe was made against (0: none)."""
        return self._generations.get(name, 0)

    def match(
        self, backends: Iterable[spec.Backend], persisted: Mapping[str, snapshot.LLMState]
    ) -> None:
        """Start afresh for a backend whose id, type, URL or credentials changed (its failures
        and last good list were someone else's); resume the records this process does not have
        yet from ``persisted`` (the status just read from the database, else empty)."""
        for backend in backends:
            name, value = backend.name, backend.spec
            identity = (backend.meta.id, value.type, value.url, value.credentials)
            if self._identities.get(name, identity) != identity:
                self._records.pop(name, None)
                self._generations.pop(name, None)
            self._identities[name] = identity
            stored = persisted.get(name)
            if stored is None or name in self._records:
                continue
            if (stored.id, stored.type, stored.base_url) != (
                backend.meta.id, value.type.value, value.url,
            ):  # fmt: skip
                continue  # the status of an earlier backend of that name
            self._records[name] = resumption.resumed_record(stored)
            self._generations[name] = stored.observed_generation

    def retain(self, names: Collection[str]) -> None:
        """Forget the backends not in ``names`` (deleted from the desired state)."""
        for table in (self._records, self._identities, self._generations):
            for name in [n for n in table if n not in names]:
                del table[name]

    async def observe(self, due: Sequence[spec.Backend], now: dt.datetime) -> Observed:
        """Probe ``due`` concurrently; a probe still running at the deadline is cancelled and
        recorded as a timeout. Never raises but a cancellation."""
        semaphore = asyncio.Semaphore(self._concurrency)
        started: set[str] = set()
        fresh: set[str] = set()

        async def probe(backend: spec.Backend) -> None:
            async with semaphore:
                started.add(backend.name)
                if await self.probe(backend, now):
                    fresh.add(backend.name)

        tasks = [asyncio.create_task(probe(b), name=b.name) for b in due]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._deadline_s)
            for task in late:
                task.cancel()
                name = task.get_name()
                if name not in started:
                    continue  # never probed: not observed this cycle, its record stands
                self._records[name] = probing.failed(
                    self.record(name), "the cycle deadline passed before it answered",
                    "timeout", now, self.policy, self._rng,
                )  # fmt: skip
            if late:
                await asyncio.wait(late)
        return Observed(frozenset(started), frozenset(fresh))

    async def probe(self, backend: spec.Backend, now: dt.datetime) -> bool:
        """Observe one backend and record the outcome; True when it answered."""
        record = self.record(backend.name)
        try:
            observation = await self._pool.get(backend.spec).observe()
        except errors.LlmctlError as exc:
            self._records[backend.name] = probing.failed(
                record,
                self._pool.redact(backend.name, exc.detail),  # the adapter masked it too
                exc.reason.value,
                now,
                self.policy,
                self._rng,
            )
            return False
        except Exception as exc:  # a bug of ours: logged with its traceback, treated as temporary
            log.exception("observation failed unexpectedly", backend=backend.name)
            self._records[backend.name] = probing.failed(
                record,
                self._pool.redact(backend.name, f"{type(exc).__name__}: {exc}"),
                errors.Reason.INTERNAL.value,  # never "protocol": the reply was not at fault
                now,
                self.policy,
                self._rng,
            )
            return False
        self._records[backend.name] = probing.succeeded(record, observation, now)
        self._generations[backend.name] = backend.meta.generation
        return True
