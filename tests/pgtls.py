"""A throwaway Postgres that requires TLS and a password, for the tests of issue 20.

`TlsPostgres.launch(directory)` makes a test CA (`tests.certificates`), a server certificate
for ``localhost`` and ``127.0.0.1``, and a `services.PostgresServer` started with ``ssl=on``
and a ``pg_hba.conf`` that accepts only ``hostssl`` connections: the superuser without a
password (the fixtures' own admin connection), every other user with a SCRAM password. A plain
(non-TLS) connection is rejected. `user_url` gives a URL of the password-authenticated user
``llmctl`` on a fresh database, without its password: the tests add the password (in the URL
or through ``LLMCTL_DATABASE_PASSWORD_FILE``) and the TLS parameters themselves.

It starts nothing when imported; `close` stops the server and deletes its files.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from pathlib import Path

import psycopg
from psycopg import sql

from tests import certificates, childprocess, services

USER = "llmctl"
_HBA = """\
# TYPE   DATABASE USER     ADDRESS       METHOD
hostssl  all      postgres 127.0.0.1/32  trust
hostssl  all      all      127.0.0.1/32  scram-sha-256
host     all      all      0.0.0.0/0     reject
"""


class _TlsServer(services.PostgresServer):
    """A `services.PostgresServer` whose cluster is set up for TLS and passwords."""

    def __init__(self, bin_dir: Path, pair: certificates.Pair) -> None:
        super().__init__(bin_dir)
        self._pair = pair

    def _init_cluster(self) -> Path:
        scratch = super()._init_cluster()
        data = scratch / "data"
        for source, name in ((self._pair.cert, "server.crt"), (self._pair.key, "server.key")):
            target = data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)  # Postgres refuses a key others can read
            if self._run_as is not None:
                os.chown(target, self._run_as.uid, self._run_as.gid)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
            conf.write("password_encryption = 'scram-sha-256'\n")
        (data / "pg_hba.conf").write_text(_HBA)
        return scratch


@dataclasses.dataclass
class TlsPostgres:
    """The server, the CA that signed its certificate, and the password of `USER`."""

    server: services.PostgresServer
    ca: Path
    password: str

    @classmethod
    def launch(cls, directory: Path) -> TlsPostgres:
        """Make the certificates in ``directory`` and start the server; raises
        `services.ServiceUnavailable` when Postgres cannot be provisioned."""
        authority = certificates.authority(directory / "ca")
        pair = authority.issue(directory / "server", "localhost", hosts=("localhost", "127.0.0.1"))
        server = _TlsServer(services.find_postgres_bin(), pair)
        childprocess.track(server)
        password = secrets.token_urlsafe(16)
        try:
            server.start()
            with psycopg.connect(server.admin_url(), autocommit=True, sslmode="require") as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(USER), sql.Literal(password)
                    )
                )
        except BaseException:
            server.close()
            raise
        return cls(server, authority.cert, password)

    def user_url(self, database: str, host: str = "127.0.0.1") -> str:
        """``postgresql://llmctl@<host>:<port>/<database>``: no password, no TLS parameters."""
        return f"postgresql://{USER}@{host}:{self.server.port}/{database}"

    def new_database(self) -> str:
        """A new database owned by `USER`; returns its name (dropped with the server)."""
        name = f"llmctl_tls_{secrets.token_hex(4)}"
        with psycopg.connect(self.server.admin_url(), autocommit=True, sslmode="require") as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(USER)
                )
            )
        return name

    def close(self) -> None:
        self.server.close()
