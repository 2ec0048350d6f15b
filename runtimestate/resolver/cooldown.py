"""Outcome tracking for the resolver: EWMA latency and errors, and a circuit breaker per provider.

Called by `runtimestate.resolver` when an application reports how a call went
(`Resolver.record_outcome`) and on every decision (`gate`). A provider whose calls fail several
times in a row, or too often within a window, is *open* (excluded) for a cooldown period; then it
is due for one trial request (*half-open*): a success closes it, a failure opens it again for a
doubled (capped) period. The EWMAs feed the `adaptive` and `least_loaded` policies, so a provider
that fails fast never looks fast or idle.

Pure bookkeeping: the current time comes in as a number of seconds on any monotonic clock; no
clock, no I/O. Not thread-safe (one event loop, or a lock in the caller).
"""

from __future__ import annotations

import collections
import dataclasses
import enum

Key = str  # a provider key: "<backend>/<model>"

_NEGLIGIBLE = 0.01  # an error EWMA below this no longer counts against a provider


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """When a provider is excluded, and for how long."""

    consecutive_failures: int = 3
    window_s: float = 60.0
    min_calls: int = 10  # the failure ratio only counts once the window holds this many calls
    failure_ratio: float = 0.5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    trial_timeout_s: float = 30.0  # a trial with no reported outcome by then frees the slot
    alpha: float = 0.2  # EWMA weight of the newest outcome
    error_half_life_s: float = 30.0  # the error rate fades with time, not only with calls


class Gate(enum.StrEnum):
    CLOSED = "closed"  # routable
    OPEN = "open"  # cooling down
    TRIAL_DUE = "trial_due"  # half-open: the next request is its one trial
    TRIAL_RUNNING = "trial_running"  # half-open: waiting for the trial's outcome


@dataclasses.dataclass(slots=True)
class _Record:
    consecutive: int = 0
    calls: collections.deque[tuple[float, bool]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=1000)
    )
    open_until: float | None = None
    cooldown_s: float = 0.0
    trial_started: float | None = None
    trial: int = 0  # the running trial's token: only its outcome decides
    latency: float | None = None
    errors: float = 0.0
    samples: int = 0  # outcomes the figures rest on (here, or where they were adopted from)
    measured: float | None = None  # when the figures last moved (this tracker's clock)


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    """What `adaptive` and `least_loaded` rank a provider by, as one process learned it:
    the latency EWMA of successful calls (None: never succeeded), the error EWMA (0..1), how
    many outcomes they rest on, and when they last moved (seconds on the tracker's clock)."""

    latency: float | None
    errors: float
    samples: int
    measured: float


class Tracker:
    """Outcomes per provider; `blocked` holds only providers that are open or half-open."""

    def __init__(self, policy: Policy = Policy()) -> None:
        self.policy = policy
        self._records: dict[Key, _Record] = {}
        self.blocked: dict[Key, _Record] = {}
        self.penalty: dict[Key, float] = {}  # error EWMA, only where it is not negligible
        self.latency: dict[Key, float] = {}  # latency EWMA of successful calls
        self.next_decay: float = float("-inf")  # when `decay` has work to do again
        # Providers whose breaker opened or closed since an owner last took them (the
        # outcome exchange sends those at once); bounded by the providers.
        self.transitions: set[Key] = set()
        self._decayed_at: float | None = None
        self._trials = 0

    def record(
        self, key: Key, ok: bool, latency_s: float, now: float, trial: int | None = None
    ) -> None:
        """Count one outcome; may open, close or re-open the provider's breaker.

        While the provider is blocked only the outcome of its running trial (``trial``, the
        token `start_trial` gave) moves the breaker: a call that began before the breaker
        opened, or a trial that timed out, must not decide it.
        """
        rec = self._records.setdefault(key, _Record())
        alpha = self.policy.alpha
        rec.samples += 1
        rec.measured = now
        rec.errors = (1 - alpha) * rec.errors + (0.0 if ok else alpha)
        if rec.errors >= _NEGLIGIBLE:
            self.penalty[key] = rec.errors
        else:
            self.penalty.pop(key, None)
        if ok:
            latency = max(0.0, latency_s)
            rec.latency = (
                latency if rec.latency is None else (1 - alpha) * rec.latency + alpha * latency
            )
            self.latency[key] = rec.latency
        if key in self.blocked:
            if trial is not None and trial == rec.trial and rec.trial_started is not None:
                self._record_trial(key, rec, ok, now)
            return
        rec.consecutive = 0 if ok else rec.consecutive + 1
        rec.calls.append((now, ok))
        while rec.calls and rec.calls[0][0] <= now - self.policy.window_s:
            rec.calls.popleft()
        if not ok and self._tripped(rec):
            self._open(key, rec, now, self.policy.cooldown_s)

    def _tripped(self, rec: _Record) -> bool:
        if rec.consecutive >= self.policy.consecutive_failures:
            return True
        if len(rec.calls) < self.policy.min_calls:
            return False
        failures = sum(1 for _, ok in rec.calls if not ok)
        return failures / len(rec.calls) >= self.policy.failure_ratio

    def _record_trial(self, key: Key, rec: _Record, ok: bool, now: float) -> None:
        if ok:
            self._close(key, rec)
        else:
            doubled = min(self.policy.max_cooldown_s, rec.cooldown_s * 2)
            self._open(key, rec, now, doubled)

    def _close(self, key: Key, rec: _Record) -> None:
        # Recovered: forget the past, or a provider that no one calls (least_loaded would
        # keep avoiding its error rate) could never earn its way back.
        rec.consecutive, rec.open_until, rec.trial_started = 0, None, None
        rec.calls.clear()
        rec.cooldown_s = rec.errors = 0.0
        self.penalty.pop(key, None)
        self.blocked.pop(key, None)
        self.transitions.add(key)

    def _open(self, key: Key, rec: _Record, now: float, cooldown_s: float) -> None:
        rec.cooldown_s = cooldown_s
        rec.open_until = now + cooldown_s
        rec.trial_started = None
        self.blocked[key] = rec
        self.transitions.add(key)

    def decay(self, now: float) -> None:
        """Fade every error rate by the time passed (at most once a second; O(penalised)).

        Without it a provider that failed once and is then avoided would stay penalised for
        ever, since only calls would move its EWMA.
        """
        self.next_decay = now + 1.0
        if self._decayed_at is None:
            self._decayed_at = now
            return
        factor = 0.5 ** ((now - self._decayed_at) / self.policy.error_half_life_s)
        self._decayed_at = now
        for key in list(self.penalty):
            rec = self._records[key]
            rec.errors *= factor
            if rec.errors >= _NEGLIGIBLE:
                self.penalty[key] = rec.errors
            else:
                del self.penalty[key]

    def gate(self, key: Key, now: float) -> Gate:
        """Whether ``key`` may be chosen now."""
        rec = self.blocked.get(key)
        if rec is None:
            return Gate.CLOSED
        if rec.trial_started is not None:
            if now - rec.trial_started < self.policy.trial_timeout_s:
                return Gate.TRIAL_RUNNING
            return Gate.TRIAL_DUE
        assert rec.open_until is not None
        return Gate.OPEN if now < rec.open_until else Gate.TRIAL_DUE

    def start_trial(self, key: Key, now: float) -> int:
        """The provider was handed out as its half-open trial; block it until the outcome.

        Returns the trial's token, to pass to `record` with its outcome.
        """
        self._trials += 1
        rec = self.blocked.get(key)
        if rec is not None:
            rec.trial_started, rec.trial = now, self._trials
        return self._trials

    def reopens_in(self, key: Key, now: float) -> float | None:
        """Seconds until ``key`` is due for a trial; None when it is not cooling down."""
        rec = self.blocked.get(key)
        if rec is None:
            return None
        if rec.trial_started is not None:
            return max(0.0, rec.trial_started + self.policy.trial_timeout_s - now)
        assert rec.open_until is not None
        return max(0.0, rec.open_until - now)

    # --- what other processes and saved profiles say ------------------------------------------

    def figures(self) -> dict[Key, Figures]:
        """The figures of every provider with at least one outcome (or adopted figures)."""
        found = ((key, self.figures_of(key)) for key in self._records)
        return {key: figures for key, figures in found if figures is not None}

    def figures_of(self, key: Key) -> Figures | None:
        """``key``'s figures; None when it has none."""
        rec = self._records.get(key)
        if rec is None or rec.measured is None:
            return None
        return Figures(rec.latency, rec.errors, rec.samples, rec.measured)

    def adopt(self, key: Key, figures: Figures) -> None:
        """Take ``figures`` (another process's, or a saved profile's) as ``key``'s own: the
        last word wins, so processes sharing them keep one fleet-wide EWMA. The breaker is
        left as it is."""
        rec = self._records.setdefault(key, _Record())
        rec.latency, rec.errors = figures.latency, figures.errors
        rec.samples, rec.measured = figures.samples, figures.measured
        if rec.errors >= _NEGLIGIBLE:
            self.penalty[key] = rec.errors
        else:
            self.penalty.pop(key, None)
        if rec.latency is None:
            self.latency.pop(key, None)
        else:
            self.latency[key] = rec.latency

    def opened_until(self, key: Key) -> float | None:
        """When ``key``'s current opening ends (a new opening moves it); None when closed."""
        rec = self.blocked.get(key)
        return None if rec is None else rec.open_until

    def breaker(self, key: Key, now: float) -> tuple[float, float] | None:
        """``key``'s open breaker as durations: seconds until its trial is due, and the
        cooldown period it opened for; None when closed."""
        rec = self.blocked.get(key)
        reopens = self.reopens_in(key, now)
        return None if rec is None or reopens is None else (reopens, rec.cooldown_s)

    def open_for(self, key: Key, now: float, remaining_s: float, cooldown_s: float) -> bool:
        """Open ``key`` for ``remaining_s`` (another process opened it; its period was
        ``cooldown_s``, which a failed trial here doubles) unless it is already open longer.
        Returns whether anything changed."""
        rec = self._records.setdefault(key, _Record())
        until = now + max(0.0, min(remaining_s, self.policy.max_cooldown_s))
        current = rec.open_until if key in self.blocked else None
        if current is not None and rec.trial_started is None and current >= until:
            return False
        self._open(key, rec, now, max(0.0, min(cooldown_s, self.policy.max_cooldown_s)))
        rec.open_until = until
        return True

    def close(self, key: Key) -> bool:
        """Close ``key``'s breaker (another process's trial succeeded), forgetting its recent
        failures as a trial's success here would. Returns whether it was open."""
        rec = self.blocked.get(key)
        if rec is None:
            return False
        self._close(key, rec)
        return True
