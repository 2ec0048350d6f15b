"""The NATS credential and TLS settings of ``serve`` and ``reconcile``: fields of `Settings`.

`NatsSettings` is the base class `controller.settings.Settings` inherits these fields from (so
each is also ``LLMCTL_<FIELD>`` and a ``--config`` key); `NatsSettings.nats_auth` turns them into
the `dwqueue.natsauth.NatsAuth` every connect site is given, reading password and token files
then. A password or token is a `pydantic.SecretStr`: never in a ``repr``, a log or an error.
It must not connect to anything.
"""

from __future__ import annotations

import pathlib

import pydantic
from pydantic_settings import BaseSettings

from dwqueue import natsauth

# A value given as a flag replaces its other form set in the environment or the file.
ALTERNATIVES = {"nats_password_file": "nats_password", "nats_token_file": "nats_token"}


class NatsSettings(BaseSettings):
    """How ``serve`` authenticates to NATS and checks its certificate."""

    nats_creds_file: pathlib.Path | None = pydantic.Field(
        None, description="NATS credentials file (user JWT and NKey seed, as nsc writes it)"
    )
    nats_nkey_file: pathlib.Path | None = pydantic.Field(
        None, description="file holding the NKey seed (SU...) of a NATS NKey user"
    )
    nats_user: str | None = pydantic.Field(None, description="NATS user name (with a password)")
    nats_password: pydantic.SecretStr | None = pydantic.Field(
        None, description="NATS password; exclusive with nats_password_file"
    )
    nats_password_file: pathlib.Path | None = pydantic.Field(
        None, description="file holding the NATS password (one trailing newline ignored)"
    )
    nats_token: pydantic.SecretStr | None = pydantic.Field(
        None, description="NATS authentication token; exclusive with nats_token_file"
    )
    nats_token_file: pathlib.Path | None = pydantic.Field(
        None, description="file holding the NATS token (one trailing newline ignored)"
    )
    nats_ca_file: pathlib.Path | None = pydantic.Field(
        None, description="PEM CA bundle that signed the NATS server's certificate (TLS on)"
    )
    nats_cert_file: pathlib.Path | None = pydantic.Field(
        None, description="PEM client certificate for NATS TLS (with nats_key_file)"
    )
    nats_key_file: pathlib.Path | None = pydantic.Field(
        None, description="PEM private key of nats_cert_file"
    )

    @pydantic.model_validator(mode="after")
    def _one_form_of_each_secret(self) -> NatsSettings:
        if self.nats_password is not None and self.nats_password_file is not None:
            raise ValueError("give nats_password or nats_password_file, not both")
        if self.nats_token is not None and self.nats_token_file is not None:
            raise ValueError("give nats_token or nats_token_file, not both")
        if (self.nats_cert_file is None) != (self.nats_key_file is None):
            raise ValueError("give nats_cert_file and nats_key_file together")
        return self

    def nats_auth(self) -> natsauth.NatsAuth:
        """The credentials these settings give, files read now. Raises
        `natsauth.NatsAuthError` naming the setting when a file cannot be read."""
        return natsauth.from_values(
            creds_file=self.nats_creds_file,
            nkey_file=self.nats_nkey_file,
            user=self.nats_user,
            password=_reveal(self.nats_password),
            password_file=self.nats_password_file,
            token=_reveal(self.nats_token),
            token_file=self.nats_token_file,
            ca_file=self.nats_ca_file,
            cert_file=self.nats_cert_file,
            key_file=self.nats_key_file,
        )


def _reveal(secret: pydantic.SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
