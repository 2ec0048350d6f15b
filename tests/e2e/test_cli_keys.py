"""``llmctl key`` and ``llmctl price`` as operators use them: a key's secret is shown once and
stored only as its hash, a revoked key no longer opens the gateway, bad input writes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from gateway import keyring, keystore
from runtimestate import database
from tests.e2e.conftest import Cli, dump


def _create(llmctl: Cli, *args: str) -> str:
    """Create a key and return the secret it printed (its only line starting ``llmk-``)."""
    done = llmctl("key", "create", *args)
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == f"key/{args[0]} created"
    assert len(lines) == 2
    assert "shown only now" in done.err
    return lines[1]


def _keyring(url: str) -> keyring.Keyring:
    async def load() -> keyring.Keyring:
        engine = database.create_async_engine(url)
        try:
            async with database.session_factory(engine)() as session:
                return keyring.Keyring(await keystore.active(session))
        finally:
            await engine.dispose()

    return asyncio.run(load())


def test_a_keys_secret_is_printed_once_at_creation_and_stored_only_as_its_hash(
    llmctl: Cli, database_url: str
) -> None:
    secret = _create(llmctl, "alice", "--model", "llama3", "--rpm", "600", "--budget", "25",
                     "--period", "month")  # fmt: skip
    assert secret.startswith("llmk-")
    assert len(secret) == 48
    shown = [
        llmctl(*args).out
        for args in (
            ("key", "list"), ("key", "list", "-o", "wide"), ("key", "list", "-o", "json"),
            ("key", "list", "-o", "yaml"), ("key", "get", "alice"), ("key", "get", "alice", "-o", "json"),
            ("key", "update", "alice", "--rpm", "10"), ("key", "revoke", "alice"),
        )
    ]  # fmt: skip
    assert all(secret not in out for out in shown)
    assert secret[:11] in shown[0]
    stored = json.dumps(dump(database_url))
    assert secret not in stored
    assert secret[11:] not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored


def test_a_key_opens_the_gateways_lookup_until_it_is_revoked(
    llmctl: Cli, database_url: str
) -> None:
    secret = _create(llmctl, "alice")
    other = _create(llmctl, "bob")
    found = _keyring(database_url).lookup(secret)
    assert found is not None
    assert found.name == "alice"
    done = llmctl("key", "revoke", "alice")
    assert (done.code, done.out) == (0, "key/alice revoked\n")
    assert _keyring(database_url).lookup(secret) is None
    assert _keyring(database_url).lookup(other) is not None
    doc = llmctl("key", "get", "alice", "-o", "json").json()
    assert doc["state"] == "revoked"
    assert doc["revokedAt"] is not None


def test_a_key_shows_what_it_allows_and_an_update_changes_it(llmctl: Cli) -> None:
    assert llmctl("pool", "create", "chat").code == 0
    _create(llmctl, "alice", "--pool", "chat", "--tpm", "5000", "--budget", "0.50",
            "--period", "day")  # fmt: skip
    doc = llmctl("key", "get", "alice", "-o", "json").json()
    assert {k: doc[k] for k in ("name", "models", "pools", "rpm", "tpm", "budgetUsd", "period")} == {
        "name": "alice", "models": [], "pools": ["chat"], "rpm": None, "tpm": 5000,
        "budgetUsd": 0.5, "period": "day",
    }  # fmt: skip
    done = llmctl("key", "update", "alice", "--model", "llama3", "--clear-pools", "--no-tpm",
                  "--rpm", "60", "--no-budget")  # fmt: skip
    assert (done.code, done.out) == (0, "key/alice updated\n")
    doc = llmctl("key", "get", "alice", "-o", "json").json()
    assert {k: doc[k] for k in ("models", "pools", "rpm", "tpm", "budgetUsd", "period")} == {
        "models": ["llama3"], "pools": [], "rpm": 60, "tpm": None, "budgetUsd": None,
        "period": "none",
    }  # fmt: skip
    assert llmctl("key", "update", "alice", "--rpm", "60").out == "key/alice unchanged\n"


def test_a_keys_routing_policy_is_set_shown_and_cleared(llmctl: Cli) -> None:
    _create(llmctl, "alice", "--policy", "sticky")
    assert llmctl("key", "get", "alice", "-o", "json").json()["policy"] == "sticky"
    assert llmctl("key", "update", "alice", "--policy", "adaptive").out == "key/alice updated\n"
    assert llmctl("key", "get", "alice", "-o", "json").json()["policy"] == "adaptive"
    assert llmctl("key", "update", "alice", "--no-policy").out == "key/alice updated\n"
    assert llmctl("key", "get", "alice", "-o", "json").json()["policy"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("key", "create", "Alice"), "key name 'Alice' is not a DNS label"),
        (("key", "create", "bob", "--rpm", "0"), "--rpm must be at least 1"),
        (("key", "create", "bob", "--rpm", "ten"), "--rpm"),
        (("key", "create", "bob", "--budget", "-5"), "--budget '-5' is not an amount of USD"),
        (("key", "create", "bob", "--period", "week", "--budget", "1"), "--period 'week'"),
        (("key", "create", "bob", "--period", "day"), "--period needs --budget"),
        (("key", "create", "bob", "--pool", "chta"), "pool 'chta' does not exist"),
        (("key", "create", "alice"), "key alice already exists"),
        (("key", "update", "alcie", "--rpm", "5"), "key 'alcie' does not exist"),
        (("key", "update", "alice", "--rpm", "5", "--no-rpm"), "--rpm contradicts"),
        (("key", "create", "bob", "--policy", "fastest"), "--policy 'fastest' is not one of"),
        (("key", "update", "alice", "--policy", "fast"), "--policy 'fast' is not one of random|"),
        (("key", "revoke", "nobody"), "key 'nobody' does not exist"),
        (
            ("price", "set", "llama3", "--prompt-usd", "x", "--completion-usd", "1"),
            "--prompt-usd 'x' is not",
        ),
        (("price", "set", "llama3", "--prompt-usd", "1", "--completion-usd", "1e-9"), "finer than"),
        (("price", "delete", "gpt-5"), "price 'gpt-5' does not exist"),
    ],
)
def test_bad_key_or_price_input_exits_2_with_one_line_and_writes_nothing(
    llmctl: Cli, database_url: str, args: tuple[str, ...], message: str
) -> None:
    assert llmctl("pool", "create", "chat").code == 0
    _create(llmctl, "alice")
    before = dump(database_url)
    done = llmctl(*args)
    assert done.code == 2
    assert message in done.err
    assert len(done.err.strip().splitlines()) == 1 or "Usage" in done.err
    assert "llmk-" not in done.out + done.err
    assert dump(database_url) == before


def test_prices_are_declared_listed_changed_and_deleted(llmctl: Cli) -> None:
    assert llmctl(
        "price", "set", "llama3", "--prompt-usd", "0.15", "--completion-usd", "0.60"
    ).out == ("price/llama3 created\n")
    assert (
        llmctl("price", "set", "gpt-4o", "--prompt-usd", "2.5", "--completion-usd", "10").code == 0
    )
    assert llmctl(
        "price", "set", "llama3", "--prompt-usd", "0.15", "--completion-usd", "0.6"
    ).out == ("price/llama3 unchanged\n")
    assert llmctl("price", "list", "-o", "json").json() == [
        {"model": "gpt-4o", "promptUsdPerMillion": 2.5, "completionUsdPerMillion": 10.0},
        {"model": "llama3", "promptUsdPerMillion": 0.15, "completionUsdPerMillion": 0.6},
    ]
    table = llmctl("price", "list").out.splitlines()
    assert table[0].split() == ["MODEL", "PROMPT-USD/M", "COMPLETION-USD/M"]
    assert table[2].split() == ["gpt-4o", "2.5", "10"]
    assert llmctl("price", "delete", "gpt-4o").out == "price/gpt-4o deleted\n"
    assert [p["model"] for p in llmctl("price", "list", "-o", "json").json()] == ["llama3"]
