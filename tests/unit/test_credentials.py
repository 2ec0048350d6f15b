"""`credentials`: the salted key derivation, the first format, the previous key, weak keys."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest
from cryptography import fernet

from runtimestate import credentials

OLD = "Zq3-old-secret-key-0123456789abcdefXY"
NEW = "Hk8_new-secret-key-9876543210fedcbaQW"


def _first_format(api_key: str, secret_key: str) -> credentials.Credentials:
    """A key as llmctl stored it before the salted derivation: Fernet under SHA-256(key)."""
    box = fernet.Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()))
    token = box.encrypt(api_key.encode()).decode()
    return credentials.Credentials(credentials.CredentialKind.ENCRYPTED, ciphertext=token)


def test_a_key_stored_in_the_first_format_still_decrypts() -> None:
    stored = _first_format("sk-from-an-old-install", OLD)
    secret = credentials.resolve(stored, {"LLMCTL_SECRET_KEY": OLD})
    assert secret is not None
    assert secret.reveal() == "sk-from-an-old-install"


def test_every_stored_key_has_a_salt_of_its_own() -> None:
    one, two = (credentials.encrypt("sk-same", NEW) for _ in range(2))
    assert one.ciphertext is not None
    assert two.ciphertext is not None
    assert one.ciphertext.startswith("v2:")
    assert one.ciphertext.split(":")[1] != two.ciphertext.split(":")[1]
    assert "sk-same" not in one.ciphertext
    for stored in (one, two):
        secret = credentials.resolve(stored, {"LLMCTL_SECRET_KEY": NEW})
        assert secret is not None
        assert secret.reveal() == "sk-same"


@pytest.mark.parametrize("stored_with", ["salted", "first format"])
def test_the_previous_secret_key_still_opens_what_it_stored(stored_with: str) -> None:
    if stored_with == "salted":
        stored = credentials.encrypt("sk-kept", OLD)
    else:
        stored = _first_format("sk-kept", OLD)
    both = {"LLMCTL_SECRET_KEY": NEW, "LLMCTL_SECRET_KEY_PREVIOUS": OLD}
    secret = credentials.resolve(stored, both)
    assert secret is not None
    assert secret.reveal() == "sk-kept"
    assert stored.ciphertext is not None
    rotated, moved = credentials.rotate(stored.ciphertext, both)
    assert moved is True
    secret = credentials.resolve(rotated, {"LLMCTL_SECRET_KEY": NEW})
    assert secret is not None
    assert secret.reveal() == "sk-kept"
    with pytest.raises(credentials.CredentialError):
        credentials.resolve(rotated, {"LLMCTL_SECRET_KEY": OLD})


@pytest.mark.parametrize(
    "environ",
    [{}, {"LLMCTL_SECRET_KEY": NEW}, {"LLMCTL_SECRET_KEY_PREVIOUS": NEW}],
    ids=["unset", "another key", "only another previous key"],
)
def test_a_key_that_cannot_be_decrypted_says_why_in_words_for_a_condition(
    environ: dict[str, str],
) -> None:
    stored = credentials.encrypt("sk-lost", OLD)
    with pytest.raises(credentials.CredentialError) as caught:
        credentials.resolve(stored, environ)
    assert str(caught.value) == (
        "cannot be decrypted: LLMCTL_SECRET_KEY is not set (or is not the key it was stored with)"
    )


@pytest.mark.parametrize(
    ("secret_key", "problem"),
    [
        ("", "LLMCTL_SECRET_KEY is not set"),
        ("short-but-random-9Xq", "it has 20 characters, fewer than 32"),
        ("k" * 32, "it has only 1 distinct characters"),
        ("password" * 4, "it has only 7 distinct characters"),
    ],
)
def test_a_weak_secret_key_is_refused_with_how_to_make_one(secret_key: str, problem: str) -> None:
    with pytest.raises(credentials.CredentialError) as caught:
        credentials.require_secret_key({"LLMCTL_SECRET_KEY": secret_key})
    message = str(caught.value)
    assert problem in message
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in message
    if secret_key:
        assert secret_key not in message


@pytest.mark.parametrize("maker", ["token_urlsafe", "hex", "base64"])
def test_a_random_secret_key_is_accepted(maker: str) -> None:
    raw = secrets.token_bytes(32)
    key = {
        "token_urlsafe": secrets.token_urlsafe(32),
        "hex": raw.hex(),
        "base64": base64.b64encode(raw).decode(),
    }[maker]
    assert credentials.require_secret_key({"LLMCTL_SECRET_KEY": key}) == key
