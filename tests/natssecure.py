"""Secured NATS servers for the tests of issue 20: TLS from a test CA (optionally requiring a
client certificate), an NKey user, operator mode with a JWT credentials file, user/password and
a token.

`Servers` (the session's `secure_nats` fixture, tests/conftest.py) starts each kind the first
time a test asks for it and keeps it for the session; each is a `services.NatsServer` with
JetStream, started from a generated config file, and a `SecureNats` that holds the files a
client needs (CA bundle, client certificate, seed, .creds, password or token file) and one file
of the same kind that the server refuses. Operator, account and user JWTs are minted here with
the `nkeys` package (NATS JWT v2: an ed25519-nkey signature over ``header.claims``), so no
`nsc` is needed. Secrets are written 0600 and never printed. Nothing here imports llmctl: the
servers are proved with the plain nats-py client (tests/integration/test_nats_secure_servers.py).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nkeys

from tests import certificates, services

_JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
# -1 is "no limit" in NATS JWTs; an absent or zero limit would allow nothing (no connections,
# no JetStream), so the test account states every limit it relies on.
_UNLIMITED_ACCOUNT = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
    "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
}  # fmt: skip
_CORE_LIMITS = frozenset(
    {"subs", "data", "payload", "imports", "exports", "wildcards", "conn", "leaf"}
)
_UNLIMITED_USER = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}


@dataclasses.dataclass(frozen=True)
class SecureNats:
    """A running secured server and what a client needs to reach it.

    `refused` is a file of the same kind as the accepted credential that the server turns
    away: another CA's certificate (TLS), another user's seed (NKey), a user of another
    operator (creds), a wrong password or token file.
    """

    server: services.NatsServer
    url: str
    refused: Path
    ca: Path | None = None
    client: certificates.Pair | None = None
    seed: Path | None = None
    creds: Path | None = None
    user: str | None = None
    password_file: Path | None = None
    token_file: Path | None = None

    def close(self) -> None:
        self.server.close()


class Servers:
    """One server of each kind, started on first use under ``directory``; `close()` stops all."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._started: dict[str, SecureNats] = {}

    def tls(self, *, verify: bool = False) -> SecureNats:
        """TLS with a certificate from a test CA; `verify` also requires a client certificate."""
        name = "mtls" if verify else "tls"
        return self._get(name, lambda d: launch_tls(d, verify=verify))

    def nkey(self) -> SecureNats:
        return self._get("nkey", launch_nkey)

    def creds(self) -> SecureNats:
        return self._get("creds", launch_operator)

    def password(self) -> SecureNats:
        return self._get("password", launch_password)

    def token(self) -> SecureNats:
        return self._get("token", launch_token)

    def close(self) -> None:
        for server in self._started.values():
            server.close()
        self._started.clear()

    def _get(self, name: str, launch: Callable[[Path], SecureNats]) -> SecureNats:
        if name not in self._started:
            self._started[name] = launch(self._directory / name)
        started = self._started[name]
        if not started.server.running:
            raise AssertionError(f"the session's {name} NATS server was stopped by a test")
        return started


def launch_tls(directory: Path, *, verify: bool = False) -> SecureNats:
    """A server speaking only TLS, its certificate for 127.0.0.1 and localhost signed by a CA
    made here (``directory/ca/ca.crt``); with `verify`, clients need a certificate from it."""
    authority = certificates.authority(directory / "ca")
    pair = authority.issue(directory / "server", "nats-server", hosts=("127.0.0.1", "localhost"))
    client = authority.issue(directory / "client", "llmctl-client") if verify else None
    other = certificates.authority(directory / "other-ca", name="some other CA")
    fields = {"cert_file": pair.cert, "key_file": pair.key, "timeout": 5}
    if verify:
        fields.update(ca_file=authority.cert, verify=True)
    config = "tls " + _block(fields)
    server = _launch(config)
    url = f"tls://127.0.0.1:{server.port}"
    return SecureNats(server, url, refused=other.cert, ca=authority.cert, client=client)


def launch_nkey(directory: Path) -> SecureNats:
    """A server whose one user is an NKey; its seed is ``directory/user.nk``."""
    user, stranger = new_key(nkeys.PREFIX_BYTE_USER), new_key(nkeys.PREFIX_BYTE_USER)
    seed = write_secret(directory / "user.nk", user.seed.decode() + "\n")
    refused = write_secret(directory / "stranger.nk", stranger.seed.decode() + "\n")
    users = [{"nkey": user.public_key.decode()}]
    server = _launch("authorization " + _block({"users": users}))
    return SecureNats(server, server.url, refused=refused, seed=seed)


def launch_operator(directory: Path) -> SecureNats:
    """A server in operator mode trusting one operator, with its accounts preloaded (memory
    resolver); ``directory/user.creds`` is a user of the ``llmctl`` account."""
    chain = _chain()
    creds = write_secret(directory / "user.creds", creds_text(chain.user.jwt, chain.user.key))
    stranger = _chain().user  # signed by an operator and account the server never heard of
    refused = write_secret(directory / "stranger.creds", creds_text(stranger.jwt, stranger.key))
    # JetStream needs a system account in operator mode.
    accounts = {signed.key.public_key.decode(): signed.jwt for signed in chain.accounts}
    config = "\n".join(
        [
            f"operator: {json.dumps(chain.operator.jwt)}",
            f"system_account: {chain.system.key.public_key.decode()}",
            "resolver: MEMORY",
            "resolver_preload " + _block(accounts),
        ]
    )
    server = _launch(config)
    return SecureNats(server, server.url, refused=refused, creds=creds)


def launch_password(directory: Path) -> SecureNats:
    """A server with one user ``llmctl`` whose password is in ``directory/password``."""
    password = secrets.token_urlsafe(24)
    password_file = write_secret(directory / "password", password + "\n")
    refused = write_secret(directory / "wrong-password", secrets.token_urlsafe(24) + "\n")
    users = [{"user": "llmctl", "password": password}]
    server = _launch("authorization " + _block({"users": users}))
    return SecureNats(
        server, server.url, refused=refused, user="llmctl", password_file=password_file
    )


def launch_token(directory: Path) -> SecureNats:
    """A server requiring the token in ``directory/token``."""
    token = secrets.token_urlsafe(24)
    token_file = write_secret(directory / "token", token + "\n")
    refused = write_secret(directory / "wrong-token", secrets.token_urlsafe(24) + "\n")
    server = _launch("authorization " + _block({"token": token}))
    return SecureNats(server, server.url, refused=refused, token_file=token_file)


@dataclasses.dataclass(frozen=True)
class Signed:
    """An entity of operator mode: its key pair and its JWT."""

    key: nkeys.KeyPair
    jwt: str


def new_key(prefix: int) -> nkeys.KeyPair:
    """A fresh NKey pair of one role (`nkeys.PREFIX_BYTE_USER`, `_ACCOUNT`, `_OPERATOR`)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def mint(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT v2 for ``subject``, signed by ``issuer``; ``nats`` holds the type-specific
    claims (with its ``type`` and ``version``)."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "nats": nats,
        "sub": subject,
    }
    # The ID is a hash of the claims, as the Go library makes it; servers only need it unique.
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(_JWT_HEADER))}.{_b64(json.dumps(claims))}"
    signature = issuer.sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


def creds_text(jwt: str, key: nkeys.KeyPair) -> str:
    """A user credentials file: the user's JWT, then its NKey seed, each in its armour."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{key.seed.decode()}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def write_secret(path: Path, text: str) -> Path:
    """Writes ``text`` to a new 0600 file (its directory made as needed); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


@dataclasses.dataclass(frozen=True)
class _Chain:
    operator: Signed
    system: Signed
    account: Signed
    user: Signed

    @property
    def accounts(self) -> tuple[Signed, Signed]:
        return self.system, self.account


def _chain() -> _Chain:
    """A new operator (self-signed), the system account and an account it signs, and a user of
    that account."""
    operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    user = new_key(nkeys.PREFIX_BYTE_USER)
    user_claims = {**_UNLIMITED_USER, "type": "user", "version": 2}

    def account(name: str, limits: dict[str, Any]) -> Signed:
        key = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
        claims = {"limits": limits, "type": "account", "version": 2}
        return Signed(key, mint(operator, key.public_key.decode(), name, claims))

    system = account("SYS", {k: v for k, v in _UNLIMITED_ACCOUNT.items() if k in _CORE_LIMITS})
    llmctl = account("llmctl", _UNLIMITED_ACCOUNT)
    op_claims = {
        "system_account": system.key.public_key.decode(),
        "type": "operator",
        "version": 2,
    }
    return _Chain(
        operator=Signed(operator, mint(operator, operator.public_key.decode(), "test", op_claims)),
        system=system,
        account=llmctl,
        user=Signed(user, mint(llmctl.key, user.public_key.decode(), "llmctl-user", user_claims)),
    )


def _launch(config: str) -> services.NatsServer:
    return services.NatsServer.launch(config=config + "\n")


def _block(fields: dict[str, Any]) -> str:
    """A config block; JSON is valid nats-server config, so values are written as JSON."""
    return json.dumps(fields, default=str, indent=2)


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
