"""`Resolver.from_database` following a NATS server that demands TLS, an NKey or a creds file
(issue 20): given as `NatsAuth` or read from the ``LLMCTL_NATS_*`` variables, and a wrong or
missing credential refused with one line naming what to fix."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from nats.aio.client import Client

import migrations
from dwqueue import natsauth
from runtimestate import database, resolver, snapshot
from runtimestate.reconcile import status
from tests import natscredentials, natssecure
from tests.integration.test_resolver_feed import AFTER, BEFORE, T0

REQUEST = resolver.Request(models=("qwen2:7b",))  # only AFTER has it


@pytest.fixture
def status_url(tmp_path: Path) -> str:
    """A migrated SQLite database whose status says gpu-1 has only BEFORE's models."""
    url = f"sqlite:///{tmp_path / 'llmctl.db'}"
    migrations.upgrade(url)
    asyncio.run(_write(url))
    return url


async def _write(url: str) -> None:
    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            await status.write_states(session, {"gpu-1": BEFORE}, {}, T0)
    finally:
        await engine.dispose()


def auth_of(server: natssecure.SecureNats, *, wrong: bool = False) -> natsauth.NatsAuth:
    """The `NatsAuth` a program embedding the resolver builds for ``server``."""
    refused = server.refused if wrong else None
    return natsauth.NatsAuth(
        ca_file=refused if wrong and server.ca else server.ca,
        cert_file=server.client.cert if server.client else None,
        key_file=server.client.key if server.client else None,
        nkey_file=refused if wrong and server.seed else server.seed,
        creds_file=refused if wrong and server.creds else server.creds,
    )


async def _sees_a_published_state(
    r: resolver.Resolver, credential: natscredentials.Credential, prefix: str
) -> None:
    """With NATS the database is re-read every 30 s: resolving the new model at once means the
    state came over the secured connection."""
    client: Client = await credential.connect()
    try:
        await client.publish(f"{prefix}.v1.state.gpu-1", snapshot.to_wire(AFTER))
        await client.flush()
    finally:
        await client.close()
    for _ in range(500):
        try:
            assert r.resolve(REQUEST).provider.backend == "gpu-1"
            return
        except resolver.ResolveError:
            await asyncio.sleep(0.01)
    raise AssertionError("the resolver never saw the state published on NATS")


@pytest.mark.parametrize("kind", [*natscredentials.KINDS, "mtls"])
async def test_from_database_follows_states_on_a_secured_server_given_its_nats_auth(
    kind: str, status_url: str, secure_nats: natssecure.Servers, nats_prefix: str
) -> None:
    credential = natscredentials.of(kind, secure_nats)
    r = await resolver.Resolver.from_database(
        status_url, credential.url, nats_prefix, nats_auth=auth_of(credential.server)
    )
    try:
        with pytest.raises(resolver.ResolveError):
            r.resolve(REQUEST)
        await _sees_a_published_state(r, credential, nats_prefix)
    finally:
        await r.aclose()


@pytest.mark.parametrize("kind", natscredentials.KINDS)
async def test_from_database_reads_the_credential_from_the_environment(
    kind: str,
    status_url: str,
    secure_nats: natssecure.Servers,
    nats_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credential = natscredentials.of(kind, secure_nats)
    for name, value in credential.env.items():
        monkeypatch.setenv(name, value)
    r = await resolver.Resolver.from_database(status_url, credential.url, nats_prefix)
    try:
        await _sees_a_published_state(r, credential, nats_prefix)
    finally:
        await r.aclose()


@pytest.mark.parametrize("wrong", [True, False], ids=["wrong", "missing"])
@pytest.mark.parametrize("kind", natscredentials.KINDS)
async def test_from_database_refuses_a_wrong_or_missing_credential_in_one_line(
    kind: str, wrong: bool, status_url: str, secure_nats: natssecure.Servers
) -> None:
    credential = natscredentials.of(kind, secure_nats)
    auth = auth_of(credential.server, wrong=True) if wrong else natsauth.NatsAuth()
    if kind == "tls" and not wrong:
        auth = dataclasses.replace(auth, ca_file=None)
    with pytest.raises(natsauth.NatsRefused) as caught:
        await resolver.Resolver.from_database(status_url, credential.url, nats_auth=auth)
    _assert_names_the_fix(str(caught.value), credential, _FIX[kind])


async def test_from_database_without_a_client_certificate_asks_for_one(
    status_url: str, secure_nats: natssecure.Servers
) -> None:
    credential = natscredentials.of("mtls", secure_nats)
    auth = dataclasses.replace(auth_of(credential.server), cert_file=None, key_file=None)
    with pytest.raises(natsauth.NatsRefused) as caught:
        await resolver.Resolver.from_database(status_url, credential.url, nats_auth=auth)
    _assert_names_the_fix(str(caught.value), credential, "--nats-cert")


_FIX = {"tls": "--nats-ca", "nkey": "--nats-nkey", "creds": "--nats-creds"}


def _assert_names_the_fix(message: str, credential: natscredentials.Credential, fix: str) -> None:
    assert "\n" not in message.strip()
    assert credential.url.split("//")[1] in message, message
    assert fix in message, message
    for secret in credential.secrets:
        assert secret not in message
