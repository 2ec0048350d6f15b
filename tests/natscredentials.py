"""The credential of each secured NATS server kind, as every client of the tests gives it.

For a `natssecure.SecureNats`, a `Credential` holds the llmctl CLI flags (``--nats-ca``,
``--nats-nkey``, ``--nats-creds``, ...), the same as ``LLMCTL_NATS_*`` variables (how `serve`
is deployed), the keyword arguments of the plain nats-py client the test itself listens with,
and the flags of a wrong credential of the same kind. Used by the issue 20 tests of `serve`,
`watch`, the CLI and `Resolver.from_database`; it starts nothing and reads no secret aloud.
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from tests import natssecure

KINDS = ("tls", "nkey", "creds")


@dataclasses.dataclass(frozen=True)
class Credential:
    """How to reach one secured server, rightly and wrongly."""

    kind: str
    server: natssecure.SecureNats
    flags: tuple[str, ...]
    env: dict[str, str]
    wrong_flags: tuple[str, ...]
    secrets: tuple[str, ...]  # texts that must never appear in any output

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self) -> tuple[str, ...]:
        """The global options of a CLI command that reaches this server."""
        return ("--nats-url", self.url, *self.flags)

    def cli_wrong(self) -> tuple[str, ...]:
        return ("--nats-url", self.url, *self.wrong_flags)

    def environment(self) -> dict[str, str]:
        return {"LLMCTL_NATS_URL": self.url, **self.env}

    async def connect(self) -> Client:
        """The test's own nats-py client, with the right credential."""
        return await nats.connect(
            self.url, allow_reconnect=False, connect_timeout=5, **client_options(self.server)
        )


def of(kind: str, servers: natssecure.Servers) -> Credential:
    """The credential of the session's server of ``kind``: one of `KINDS`, or ``mtls`` (TLS
    with a client certificate), ``password`` or ``token``."""
    match kind:
        case "tls" | "mtls":
            return _tls(kind, servers.tls(verify=kind == "mtls"))
        case "nkey":
            server = servers.nkey()
            assert server.seed is not None
            return _file(kind, server, "--nats-nkey", server.seed, (server.seed, server.refused))
        case "creds":
            server = servers.creds()
            assert server.creds is not None
            credential = _file(kind, server, "--nats-creds", server.creds, ())
            hidden = (_seed_of(server.creds), _seed_of(server.refused))
            return dataclasses.replace(credential, secrets=hidden)
        case "password":
            server = servers.password()
            assert server.password_file is not None
            credential = _file(
                kind, server, "--nats-password-file", server.password_file,
                (server.password_file, server.refused),
            )  # fmt: skip
            return _with_user(credential, server.user or "")
        case "token":
            server = servers.token()
            assert server.token_file is not None
            hidden = (server.token_file, server.refused)
            return _file(kind, server, "--nats-token-file", server.token_file, hidden)
    raise ValueError(f"no secured NATS server kind {kind!r}")


_ENV = {
    "--nats-ca": "LLMCTL_NATS_CA_FILE",
    "--nats-cert": "LLMCTL_NATS_CERT_FILE",
    "--nats-key": "LLMCTL_NATS_KEY_FILE",
    "--nats-nkey": "LLMCTL_NATS_NKEY_FILE",
    "--nats-creds": "LLMCTL_NATS_CREDS_FILE",
    "--nats-user": "LLMCTL_NATS_USER",
    "--nats-password-file": "LLMCTL_NATS_PASSWORD_FILE",
    "--nats-token-file": "LLMCTL_NATS_TOKEN_FILE",
}


def environment_of(flags: tuple[str, ...]) -> dict[str, str]:
    """The ``LLMCTL_NATS_*`` variables that say what ``flags`` (pairs of flag and value) say."""
    return {_ENV[flag]: value for flag, value in zip(flags[::2], flags[1::2], strict=True)}


def _tls(kind: str, server: natssecure.SecureNats) -> Credential:
    assert server.ca is not None
    flags: tuple[str, ...] = ("--nats-ca", str(server.ca))
    hidden: tuple[str, ...] = ()
    if server.client is not None:
        flags += ("--nats-cert", str(server.client.cert), "--nats-key", str(server.client.key))
        hidden = (_read(server.client.key),)
    wrong = ("--nats-ca", str(server.refused), *flags[2:])
    return Credential(kind, server, flags, environment_of(flags), wrong, hidden)


def _file(
    kind: str, server: natssecure.SecureNats, flag: str, path: Path, hidden: tuple[Path, ...]
) -> Credential:
    flags = (flag, str(path))
    wrong = (flag, str(server.refused))
    secrets = tuple(_read(p) for p in hidden)
    return Credential(kind, server, flags, environment_of(flags), wrong, secrets)


def _with_user(credential: Credential, user: str) -> Credential:
    return dataclasses.replace(
        credential,
        flags=("--nats-user", user, *credential.flags),
        wrong_flags=("--nats-user", user, *credential.wrong_flags),
        env={"LLMCTL_NATS_USER": user, **credential.env},
    )


def client_options(server: natssecure.SecureNats) -> dict[str, Any]:
    """nats-py keyword arguments that reach ``server`` with its own credential."""
    options: dict[str, Any] = {}
    if server.ca is not None:
        context = ssl.create_default_context(cafile=str(server.ca))
        if server.client is not None:
            context.load_cert_chain(server.client.cert, server.client.key)
        options["tls"] = context
    if server.seed is not None:
        options["nkeys_seed"] = str(server.seed)
    if server.creds is not None:
        options["user_credentials"] = str(server.creds)
    if server.password_file is not None:
        options |= {"user": server.user, "password": _read(server.password_file)}
    if server.token_file is not None:
        options["token"] = _read(server.token_file)
    return options


def _read(path: Path) -> str:
    return path.read_text().strip()


def _seed_of(creds: Path) -> str:
    lines = creds.read_text().splitlines()
    return lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
