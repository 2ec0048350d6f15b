"""Virtual API keys: their values, their secrets, and the checks on what a key declares.

Called by `gateway.keystore` (which stores only `digest` of a secret), `gateway.keyring` (the
gateway's lookup) and the ``llmctl key`` commands. Pure apart from `new_secret`'s randomness:
no database, network, clock or logging.

Why a plain SHA-256 and not bcrypt or argon2: a secret is 32 random bytes (256 bits), so
guessing one from its hash is hopeless however fast the hash is; slow, salted hashes protect
low-entropy passwords, and would cost milliseconds per request and make the lookup by hash
(an index) impossible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import secrets

from runtimestate import echo
from runtimestate.desired import names
from runtimestate.resolver import policies

SCHEME = "llmk-"
PREFIX_CHARS = len(SCHEME) + 6  # `llmk-Ab3dE_`: enough to tell keys apart, useless to guess
POLICIES = tuple(p.value for p in policies.Policy)  # a key's routing policy is one of these


class KeyRefused(ValueError):
    """A key's declaration or lookup the store refuses; the message names the fix."""


class Period(enum.StrEnum):
    """How long a spend budget lasts before it starts again (UTC): a day, a month, or ever."""

    DAY = "day"
    MONTH = "month"
    NONE = "none"


@dataclasses.dataclass(frozen=True, slots=True)
class KeySpec:
    """What an operator declares for a key. Empty ``models`` and ``pools`` allow every model;
    None limits are unlimited. ``budget_microusd`` is spend allowed per ``period``."""

    name: str
    models: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    budget_microusd: int | None = None
    period: Period = Period.NONE
    policy: str | None = None  # the resolver policy of requests that name none


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """A stored key: its declaration, id, the SHA-256 of its secret and its display prefix."""

    id: int
    spec: KeySpec
    secret_sha256: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def new_secret() -> str:
    """A fresh secret: ``llmk-`` and 32 random bytes, URL-safe base64 (43 characters)."""
    return SCHEME + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The hex SHA-256 of a presented or new secret: what is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def prefix(secret: str) -> str:
    """The first characters of a secret, shown in lists so people can tell keys apart."""
    return secret[:PREFIX_CHARS]


def check(value: KeySpec) -> KeySpec:
    """``value`` if valid, else `KeyRefused` naming the field and the fix."""
    try:
        names.check_dns_label(value.name, "key")
    except names.InvalidName as exc:
        raise KeyRefused(str(exc)) from None
    for model in value.models:
        if not model.strip() or len(model) > 600:
            raise KeyRefused(
                f"model {echo.quoted(model)} is not a model name; give one such as llama3"
            )
    for pool in value.pools:
        if not names.is_dns_label(pool):
            raise KeyRefused(f"pool {echo.quoted(pool)} is not a pool name; see llmctl pool list")
    for field, limit in (("rpm", value.rpm), ("tpm", value.tpm)):
        if limit is not None and limit < 1:
            raise KeyRefused(f"--{field} must be at least 1 (omit it for no limit)")
    if value.budget_microusd is not None and value.budget_microusd < 0:
        raise KeyRefused("--budget must not be negative; give USD such as 25 or 0.50")
    if value.policy is not None and value.policy not in POLICIES:
        raise KeyRefused(f"--policy {echo.quoted(value.policy)} is not one of {'|'.join(POLICIES)}")
    if value.budget_microusd is None and value.period is not Period.NONE:
        raise KeyRefused("--period needs --budget; give both, e.g. --budget 25 --period month")
    return value
