"""Virtual API keys as the gateway meets them (`gateway.keys`, `gateway.keyring`): secrets,
their hashes, finding the key a request presents, and what a key may declare."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest

from gateway import keyring, keys

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _stored(name: str, secret: str, *, key_id: int = 1, revoked: bool = False) -> keys.Key:
    return keys.Key(
        key_id, keys.KeySpec(name), keys.digest(secret), keys.prefix(secret), T0,
        T0 if revoked else None,
    )  # fmt: skip


def test_a_new_secret_is_llmk_and_32_random_url_safe_bytes() -> None:
    made = {keys.new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("llmk-")
        assert len(secret) == len("llmk-") + 43  # 32 bytes, base64 without padding
        assert set(secret[5:]) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_the_stored_digest_is_the_sha256_of_the_secret_and_the_prefix_is_short() -> None:
    secret = keys.new_secret()
    assert keys.digest(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(keys.prefix(secret))
    assert len(keys.prefix(secret)) == 11


def test_the_keyring_finds_the_key_whose_secret_is_presented() -> None:
    alice, bob = keys.new_secret(), keys.new_secret()
    ring = keyring.Keyring([_stored("alice", alice), _stored("bob", bob, key_id=2)])
    found = ring.lookup(bob)
    assert found is not None
    assert found.name == "bob"
    assert ring.lookup(alice) is not None


def test_a_revoked_key_is_never_found() -> None:
    secret = keys.new_secret()
    ring = keyring.Keyring([_stored("alice", secret, revoked=True)])
    assert ring.lookup(secret) is None
    assert len(ring) == 0


@pytest.mark.parametrize(
    "presented", ["", "llmk-", "Bearer llmk-x", "sk-abc", "llmk-" + "A" * 43, "\udcff"]
)
def test_an_unknown_or_malformed_secret_finds_nothing(presented: str) -> None:
    ring = keyring.Keyring([_stored("alice", keys.new_secret())])
    assert ring.lookup(presented) is None


def test_the_hash_itself_does_not_open_a_key() -> None:
    secret = keys.new_secret()
    ring = keyring.Keyring([_stored("alice", secret)])
    assert ring.lookup(keys.digest(secret)) is None


VALID = keys.KeySpec("alice", ("llama3",), ("default",), 600, 10_000, 25_000_000, keys.Period.DAY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Alice"}, "not a DNS label"),
        ({"models": ("",)}, "is not a model name"),
        ({"pools": ("Not A Pool",)}, "is not a pool name"),
        ({"rpm": 0}, "--rpm must be at least 1"),
        ({"tpm": 0}, "--tpm must be at least 1"),
        ({"budget_microusd": None}, "--period needs --budget"),
    ],
)
def test_a_key_declaring_something_invalid_is_refused_naming_the_fix(
    change: dict[str, object], message: str
) -> None:
    assert keys.check(VALID) == VALID
    with pytest.raises(keys.KeyRefused, match=message):
        keys.check(dataclasses.replace(VALID, **change))  # type: ignore[arg-type]
