"""The NATS credential and TLS flags of ``llmctl`` (global options, so ``serve`` has them too).

``--nats-creds FILE``, ``--nats-nkey FILE``, ``--nats-user NAME``, ``--nats-password-file FILE``,
``--nats-token-file FILE``, ``--nats-ca FILE``, ``--nats-cert FILE``, ``--nats-key FILE``, each
also read from its ``LLMCTL_NATS_*`` variable; a password or token is never a command-line
value, only a file or ``LLMCTL_NATS_PASSWORD`` / ``LLMCTL_NATS_TOKEN``. The root callback
(`controller.cli`) builds the commands' `dwqueue.natsauth.NatsAuth` with `auth`; ``serve`` and
``reconcile`` turn the flags given on the command line into settings with `overrides`.

Cheap to import (the CLI imports it for every command): typer and `dwqueue.natsauth` only.
It must not connect to anything.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from dwqueue import natsauth


def _file(flag: str, env: str, text: str) -> Any:
    return typer.Option(flag, envvar=env, help=text, show_default=False, dir_okay=False)


CredsOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-creds", "LLMCTL_NATS_CREDS_FILE", "NATS credentials file (JWT and NKey seed)"),
]
NkeyOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-nkey", "LLMCTL_NATS_NKEY_FILE", "File with the NKey seed of a NATS user"),
]
UserOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-user",
        envvar="LLMCTL_NATS_USER",
        help="NATS user (password from --nats-password-file or LLMCTL_NATS_PASSWORD)",
        show_default=False,
    ),
]
PasswordFileOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-password-file", "LLMCTL_NATS_PASSWORD_FILE", "File with the NATS password"),
]
TokenFileOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-token-file", "LLMCTL_NATS_TOKEN_FILE", "File with the NATS token"),
]
CaOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-ca", "LLMCTL_NATS_CA_FILE", "CA bundle for the NATS server's TLS certificate"),
]
CertOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-cert", "LLMCTL_NATS_CERT_FILE", "Client certificate for NATS TLS"),
]
KeyOpt = Annotated[
    pathlib.Path | None,
    _file("--nats-key", "LLMCTL_NATS_KEY_FILE", "Private key of --nats-cert"),
]

# Parameter of the root callback -> settings field.
FIELDS = {
    "nats_creds": "nats_creds_file",
    "nats_nkey": "nats_nkey_file",
    "nats_user": "nats_user",
    "nats_password_file": "nats_password_file",
    "nats_token_file": "nats_token_file",
    "nats_ca": "nats_ca_file",
    "nats_cert": "nats_cert_file",
    "nats_key": "nats_key_file",
}
FLAGS = tuple(f"--{param.replace('_', '-')}" for param in FIELDS)
# The secret given in the environment, and the flag that gives it as a file.
_SECRETS = {"password": "LLMCTL_NATS_PASSWORD", "token": "LLMCTL_NATS_TOKEN"}


def conflict(
    params: Mapping[str, Any], from_command_line: set[str], environ: Mapping[str, str]
) -> str | None:
    """Why the secrets given cannot be used together, or None. A file given as a flag
    replaces the value in the environment; both in the environment are a mistake."""
    for kind, variable in _SECRETS.items():
        param = f"nats_{kind}_file"
        if (
            environ.get(variable)
            and params.get(param) is not None
            and param not in from_command_line
        ):
            return (
                f"{variable} and {variable}_FILE are both set: unset one of them "
                f"(or give --nats-{kind}-file, which wins)"
            )
    return None


def auth(
    params: Mapping[str, Any], from_command_line: set[str], environ: Mapping[str, str]
) -> natsauth.NatsAuth:
    """The commands' credentials from the root's ``params`` (flags or their variables) and
    ``environ`` (the password or token itself). Raises `natsauth.NatsAuthError`."""
    secrets: dict[str, str | None] = {}
    for kind, variable in _SECRETS.items():
        file_param = f"nats_{kind}_file"
        secrets[kind] = (
            None if params.get(file_param) is not None else environ.get(variable) or None
        )
    return natsauth.from_values(
        creds_file=params.get("nats_creds"),
        nkey_file=params.get("nats_nkey"),
        user=params.get("nats_user"),
        password=secrets["password"],
        password_file=params.get("nats_password_file"),
        token=secrets["token"],
        token_file=params.get("nats_token_file"),
        ca_file=params.get("nats_ca"),
        cert_file=params.get("nats_cert"),
        key_file=params.get("nats_key"),
    )


def overrides(params: Mapping[str, Any], from_command_line: set[str]) -> dict[str, Any]:
    """The NATS flags given on the command line as settings overrides (``serve``)."""
    return {
        FIELDS[p]: params[p] for p in FIELDS if p in from_command_line and params.get(p) is not None
    }
