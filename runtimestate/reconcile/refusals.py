"""LoRA loads a server refused, held back so that it is not asked again every cycle (issue 16).

Kept by `runtimestate.reconcile.cycle.BackendCycle` between passes, in memory (a restarted
controller asks once more). A load that failed for good (`execution.Outcome.terminal`: the
server's runtime LoRA updating is off, no adapter at the path, a name clash) is held for its
(backend, adapter) until `HOLD` (ten minutes) has passed, the backend reports another version
(a restart into a new release), or the adapter's declared source changed. While held, the
planner reports it as drift with the server's words (`loras`, `load_refused`) instead of
loading it. A failure that may pass (a timeout, a 5xx) is not held: the next cycle retries.

`records` also hands the planner the adapters llmctl loaded (`status.managed_adapters`).
Pure bookkeeping: no I/O; the caller passes the clock's instant.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence

from runtimestate.reconcile import execution, observation, planview, probing, steps

HOLD = dt.timedelta(minutes=10)


def versions(
    observer: observation.Observer, now: dt.datetime, policy: probing.Policy
) -> Callable[[str], str | None]:
    """The version each backend's usable observation reports (None: none usable)."""

    def version(name: str) -> str | None:
        usable = observer.record(name).usable(now, policy)
        return usable.version if usable is not None else None

    return version


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    detail: str
    source: str
    version: str | None
    until: dt.datetime


class Refusals:
    """The refused loads held, by backend and adapter."""

    def __init__(self, hold: dt.timedelta = HOLD) -> None:
        self._hold = hold
        self._held: dict[str, dict[str, _Held]] = {}

    def note(
        self,
        outcomes: Sequence[execution.Outcome],
        version_of: Callable[[str], str | None],
        now: dt.datetime,
    ) -> None:
        """Hold the loads of a pass that the servers refused for good."""
        for outcome in outcomes:
            action = outcome.action
            if isinstance(action, steps.LoadAdapter) and outcome.terminal:
                held = _Held(
                    outcome.detail, action.source, version_of(action.backend), now + self._hold
                )
                self._held.setdefault(action.backend, {})[action.adapter] = held

    def records(
        self,
        views: Mapping[str, planview.BackendView],
        managed: Iterable[tuple[str, str]],
        version_of: Callable[[str], str | None],
        now: dt.datetime,
    ) -> dict[str, planview.LoraRecord]:
        """What the planner knows of each backend's adapters beyond its observation; backends
        with neither a managed adapter nor a held refusal are left out (`planview.NO_LORAS`)."""
        loaded: dict[str, set[str]] = {}
        for backend, adapter in managed:
            loaded.setdefault(backend, set()).add(adapter)
        refused = self._still_held(views, version_of, now)
        return {
            name: planview.LoraRecord(
                frozenset(loaded.get(name, ())), tuple(sorted(refused.get(name, {}).items()))
            )
            for name in sorted(loaded.keys() | refused.keys())
        }

    def _still_held(
        self,
        views: Mapping[str, planview.BackendView],
        version_of: Callable[[str], str | None],
        now: dt.datetime,
    ) -> dict[str, dict[str, str]]:
        """Drop the holds that expired, whose backend is gone or restarted into another
        version, or whose adapter's source changed; the rest, by backend and adapter."""
        for name in [n for n in self._held if n not in views]:
            del self._held[name]
        found: dict[str, dict[str, str]] = {}
        for name, held in self._held.items():
            sources = {a.name: a.source for a in views[name].adapters}
            version = version_of(name)
            for adapter, hold in list(held.items()):
                if (
                    now >= hold.until
                    or hold.version != version
                    or sources.get(adapter) != hold.source
                ):
                    del held[adapter]
                else:
                    found.setdefault(name, {})[adapter] = hold.detail
        return found
