"""Backend credentials: encrypting API keys at rest and resolving them when a backend is called.

Called by the CLI (``--api-key-stdin``) and by whatever builds a backend adapter. Keys are
encrypted with Fernet under a key derived from ``LLMCTL_SECRET_KEY``; an environment-variable
reference stores only the variable's name. A key is held in a `Secret`, whose ``str`` and
``repr`` never show it, so it cannot reach a log or an output by accident.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

from cryptography import fernet

from runtimestate import spec

SECRET_KEY_VARIABLE = "LLMCTL_SECRET_KEY"  # noqa: S105 - the variable's name, not a secret


class CredentialError(ValueError):
    """A key that cannot be stored or read; the message says how to fix it (never the key)."""


class Secret:
    """An API key that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that sends it to the backend."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def _fernet(secret_key: str) -> fernet.Fernet:
    # A passphrase of any length becomes a 32-byte Fernet key. LLMCTL_SECRET_KEY is meant to be
    # random (e.g. `openssl rand -base64 32`), so a plain hash is enough; no password stretching.
    digest = hashlib.sha256(secret_key.encode()).digest()
    return fernet.Fernet(base64.urlsafe_b64encode(digest))


def require_secret_key(environ: Mapping[str, str]) -> str:
    key = environ.get(SECRET_KEY_VARIABLE, "")
    if not key:
        raise CredentialError(
            f"{SECRET_KEY_VARIABLE} is not set, so the key cannot be encrypted; set it "
            "(e.g. export LLMCTL_SECRET_KEY=$(openssl rand -base64 32)) or use --api-key-env VAR"
        )
    return key


def encrypt(api_key: str, secret_key: str) -> spec.Credentials:
    """Credentials holding ``api_key`` encrypted under ``secret_key``."""
    api_key = api_key.strip()
    if not api_key:
        raise CredentialError("the API key read from standard input is empty")
    token = _fernet(secret_key).encrypt(api_key.encode()).decode()
    return spec.Credentials(kind=spec.CredentialKind.ENCRYPTED, ciphertext=token)


def resolve(credentials: spec.Credentials | None, environ: Mapping[str, str]) -> Secret | None:
    """The API key the credentials lead to, or None when the backend has none.

    Raises `CredentialError` when the variable is unset or the stored key cannot be decrypted.
    """
    if credentials is None:
        return None
    if credentials.kind is spec.CredentialKind.ENV:
        assert credentials.env_var is not None
        value = environ.get(credentials.env_var)
        if not value:
            raise CredentialError(f"environment variable {credentials.env_var} is not set")
        return Secret(value)
    if credentials.ciphertext is None:
        raise CredentialError("no stored key")
    try:
        plain = _fernet(require_secret_key(environ)).decrypt(credentials.ciphertext.encode())
    except fernet.InvalidToken:
        raise CredentialError(
            f"the stored key cannot be decrypted with this {SECRET_KEY_VARIABLE}; "
            "set the one it was stored with, or store the key again"
        ) from None
    return Secret(plain.decode())
