"""Backend credentials: encrypting API keys at rest and resolving them when a backend is called.

Called by the CLI (``--api-key-stdin``, ``secrets rotate``) and by whatever builds a backend
adapter. A key is held in a `Secret`, whose ``str`` and ``repr`` never show it, so it cannot
reach a log or an output by accident; an environment-variable reference stores only the
variable's name.

Stored keys are Fernet tokens under a key derived from ``LLMCTL_SECRET_KEY`` with HKDF-SHA256
and a random 16-byte salt of their own, stored with the token (``v2:<salt>:<token>``), so every
reader of the row can decrypt without another query. HKDF, not a password hash: the secret key
must be at least 32 characters of random text (`require_secret_key` refuses weaker ones), so
stretching would add nothing. Tokens of the first format (a bare token under the SHA-256 of the
secret key) still decrypt. ``LLMCTL_SECRET_KEY_PREVIOUS`` is tried after the current key, so a
key can be rotated (`rotate` re-encrypts under the current one) without losing stored keys.
Pure apart from the environment mapping it is given: no database, no logging.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import fernet

SECRET_KEY_VARIABLE = "LLMCTL_SECRET_KEY"  # noqa: S105 - the variable's name, not a secret
PREVIOUS_KEY_VARIABLE = "LLMCTL_SECRET_KEY_PREVIOUS"
MIN_SECRET_KEY_LENGTH = 32
MIN_DISTINCT_CHARACTERS = 10  # 32 random base64 or hex characters have far more
MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
UNDECRYPTABLE = (
    f"cannot be decrypted: {SECRET_KEY_VARIABLE} is not set (or is not the key it was stored with)"
)
_VERSION = "v2"
_SALT_BYTES = 16
_INFO = b"llmctl credentials v2"


class CredentialKind(enum.StrEnum):
    ENV = "env"
    ENCRYPTED = "encrypted"


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """How a backend's API key is found: an environment variable, or a stored ciphertext.

    The ciphertext is excluded from ``repr`` so it never reaches a log by accident; the key
    itself is only ever held by `runtimestate.credentials`.
    """

    kind: CredentialKind
    env_var: str | None = None
    ciphertext: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """The public description: ``env:VAR`` or ``encrypted``. Never the key."""
        if self.kind is CredentialKind.ENV:
            return f"env:{self.env_var}"
        return "encrypted"


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


def _derived(secret_key: str, salt: bytes) -> fernet.Fernet:
    # cryptography is imported by the functions that use it: every command that reads
    # backends reads their credentials' descriptions, and few encrypt or decrypt.
    from cryptography import fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf import hkdf

    kdf = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO)
    return fernet.Fernet(base64.urlsafe_b64encode(kdf.derive(secret_key.encode())))


def _legacy(secret_key: str) -> fernet.Fernet:
    from cryptography import fernet

    # The first format: the SHA-256 of the secret key, no salt. Only ever read, never written.
    digest = hashlib.sha256(secret_key.encode()).digest()
    return fernet.Fernet(base64.urlsafe_b64encode(digest))


def _salt_text(salt: bytes) -> str:
    return base64.urlsafe_b64encode(salt).decode().rstrip("=")


def _parse(ciphertext: str) -> tuple[bytes | None, str]:
    """The salt (None: the first format) and the Fernet token of a stored ciphertext."""
    if not ciphertext.startswith(f"{_VERSION}:"):
        return None, ciphertext
    parts = ciphertext.split(":", 2)
    if len(parts) != 3:
        raise CredentialError(UNDECRYPTABLE)
    _, salt_text, token = parts
    try:
        salt = base64.urlsafe_b64decode(salt_text + "=" * (-len(salt_text) % 4))
    except (binascii.Error, ValueError):
        raise CredentialError(UNDECRYPTABLE) from None
    return salt, token


def weakness(secret_key: str) -> str | None:
    """Why ``secret_key`` is too weak to encrypt with, or None. Never quotes the key."""
    if len(secret_key) < MIN_SECRET_KEY_LENGTH:
        return f"it has {len(secret_key)} characters, fewer than {MIN_SECRET_KEY_LENGTH}"
    if len(set(secret_key)) < MIN_DISTINCT_CHARACTERS:
        return f"it has only {len(set(secret_key))} distinct characters: not random text"
    return None


def require_secret_key(environ: Mapping[str, str]) -> str:
    """``LLMCTL_SECRET_KEY`` for encrypting. Raises `CredentialError` (saying how to make a
    good one) when it is unset or weak: shorter than 32 characters, or not random-looking."""
    key = environ.get(SECRET_KEY_VARIABLE, "")
    if not key:
        raise CredentialError(
            f"{SECRET_KEY_VARIABLE} is not set, so the key cannot be encrypted; set it to "
            f"at least {MIN_SECRET_KEY_LENGTH} random characters (make one with: {MAKE_ONE}) "
            "or use --api-key-env VAR"
        )
    problem = weakness(key)
    if problem is not None:
        raise CredentialError(
            f"{SECRET_KEY_VARIABLE} is too weak to encrypt API keys ({problem}); set it to "
            f"at least {MIN_SECRET_KEY_LENGTH} random characters (make one with: {MAKE_ONE})"
        )
    return key


def decryption_keys(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secret keys to decrypt with, current first: ``LLMCTL_SECRET_KEY`` then
    ``LLMCTL_SECRET_KEY_PREVIOUS``, those that are set. Weak ones too: decrypting with an
    old weak key is how one rotates away from it."""
    found = (environ.get(SECRET_KEY_VARIABLE, ""), environ.get(PREVIOUS_KEY_VARIABLE, ""))
    return tuple(dict.fromkeys(k for k in found if k))


def encrypt(api_key: str, secret_key: str) -> Credentials:
    """Credentials holding ``api_key`` encrypted under ``secret_key`` with a fresh salt."""
    api_key = api_key.strip()
    if not api_key:
        raise CredentialError("the API key read from standard input is empty")
    salt = os.urandom(_SALT_BYTES)
    token = _derived(secret_key, salt).encrypt(api_key.encode()).decode()
    ciphertext = f"{_VERSION}:{_salt_text(salt)}:{token}"
    return Credentials(kind=CredentialKind.ENCRYPTED, ciphertext=ciphertext)


def decrypt(ciphertext: str, secret_keys: Sequence[str]) -> tuple[Secret, int]:
    """The key stored in ``ciphertext`` and the index of the secret key that opened it.

    Raises `CredentialError` (`UNDECRYPTABLE`) when none of ``secret_keys`` does.
    """
    from cryptography import fernet

    salt, token = _parse(ciphertext)
    for index, secret_key in enumerate(secret_keys):
        box = _legacy(secret_key) if salt is None else _derived(secret_key, salt)
        try:
            return Secret(box.decrypt(token.encode()).decode()), index
        except fernet.InvalidToken:
            continue
    raise CredentialError(UNDECRYPTABLE)


def is_current(ciphertext: str) -> bool:
    """Whether ``ciphertext`` is in the current format (salted HKDF); says nothing of the key."""
    return _parse(ciphertext)[0] is not None


def rotate(ciphertext: str, environ: Mapping[str, str]) -> tuple[Credentials, bool]:
    """``ciphertext`` re-encrypted under the current ``LLMCTL_SECRET_KEY`` (which must be
    strong), and whether it had to be (under the previous key, or in the first format).

    Raises `CredentialError` when no key decrypts it or the current key is unset or weak.
    """
    current = require_secret_key(environ)
    secret, index = decrypt(ciphertext, decryption_keys(environ))
    moved = index > 0 or not is_current(ciphertext)
    return encrypt(secret.reveal(), current), moved


def resolve(credentials: Credentials | None, environ: Mapping[str, str]) -> Secret | None:
    """The API key the credentials lead to, or None when the backend has none.

    Raises `CredentialError` when the variable is unset or the stored key cannot be decrypted
    (the message is `UNDECRYPTABLE`: it belongs in a backend's condition, not CLI advice).
    """
    if credentials is None:
        return None
    if credentials.kind is CredentialKind.ENV:
        assert credentials.env_var is not None
        value = environ.get(credentials.env_var)
        if not value:
            raise CredentialError(f"environment variable {credentials.env_var} is not set")
        return Secret(value)
    if credentials.ciphertext is None:
        raise CredentialError("no stored key")
    return decrypt(credentials.ciphertext, decryption_keys(environ))[0]
