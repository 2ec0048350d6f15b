"""The secured NATS servers of tests/natssecure.py, proved with the plain nats-py client.

Each kind accepts the credential it hands out (publish, subscribe and JetStream work, as serve
needs) and refuses a missing one and one of the same kind that is not its own. The llmctl tests
of issue 20 rely on both halves: a fixture that let everyone in would make them pass vacuously.
"""

from __future__ import annotations

import secrets
import ssl
import stat
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nkeys
import pytest

from tests import natssecure


async def _round_trip(url: str, **options: Any) -> None:
    """Connects, sees its own message come back and stores one in a JetStream stream."""
    client = await nats.connect(
        url, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0, **options
    )
    try:
        subject = f"t{secrets.token_hex(6)}"
        subscription = await client.subscribe(subject)
        await client.publish(subject, b"hello")
        assert (await subscription.next_msg(timeout=5)).data == b"hello"
        stream = client.jetstream(timeout=5)
        await stream.add_stream(name=subject, subjects=[f"{subject}.>"])
        assert (await stream.publish(f"{subject}.one", b"stored")).seq == 1
    finally:
        await client.close()


async def _refused(url: str, **options: Any) -> BaseException:
    with pytest.raises((nats.errors.Error, OSError)) as caught:
        await _round_trip(url, **options)
    return caught.value


def _trusting(ca: Path, client: Any = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def _secret(path: Path | None) -> str:
    assert path is not None
    return path.read_text().strip()


async def test_tls_server_accepts_a_client_trusting_its_ca_and_refuses_one_trusting_another(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.tls()
    assert server.ca is not None
    assert server.url.startswith("tls://")
    await _round_trip(server.url, tls=_trusting(server.ca))
    refused = await _refused(server.url, tls=_trusting(server.refused))
    assert isinstance(refused, ssl.SSLCertVerificationError)


async def test_tls_server_is_not_trusted_through_the_machines_certificate_store(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.tls()
    # nats-py upgrades to TLS with the default trust store when given no context.
    refused = await _refused(server.url)
    assert isinstance(refused, ssl.SSLCertVerificationError)


async def test_mutual_tls_server_needs_a_client_certificate_from_its_ca(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.tls(verify=True)
    assert server.ca is not None
    assert server.client is not None
    await _round_trip(server.url, tls=_trusting(server.ca, server.client))
    await _refused(server.url, tls=_trusting(server.ca))


async def test_nkey_server_accepts_its_users_seed_and_refuses_another_or_none(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.nkey()
    await _round_trip(server.url, nkeys_seed=str(server.seed))
    assert "Authorization Violation" in str(await _refused(server.url))
    refused = await _refused(server.url, nkeys_seed=str(server.refused))
    assert "Authorization Violation" in str(refused)


async def test_operator_server_accepts_its_creds_and_refuses_another_operators_user_or_none(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.creds()
    await _round_trip(server.url, user_credentials=str(server.creds))
    assert "Authorization Violation" in str(await _refused(server.url))
    refused = await _refused(server.url, user_credentials=str(server.refused))
    assert "Authorization Violation" in str(refused)


async def test_password_server_accepts_its_users_password_and_refuses_a_wrong_one(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.password()
    await _round_trip(server.url, user=server.user, password=_secret(server.password_file))
    refused = await _refused(server.url, user=server.user, password=_secret(server.refused))
    assert "Authorization Violation" in str(refused)


async def test_token_server_accepts_its_token_and_refuses_a_wrong_one_or_none(
    secure_nats: natssecure.Servers,
) -> None:
    server = secure_nats.token()
    await _round_trip(server.url, token=_secret(server.token_file))
    assert "Authorization Violation" in str(await _refused(server.url))
    refused = await _refused(server.url, token=_secret(server.refused))
    assert "Authorization Violation" in str(refused)


def test_secure_servers_write_every_secret_readable_by_the_owner_only(
    secure_nats: natssecure.Servers,
) -> None:
    nkey, creds, token = secure_nats.nkey(), secure_nats.creds(), secure_nats.token()
    mtls = secure_nats.tls(verify=True)
    assert mtls.client is not None
    files = [nkey.seed, nkey.refused, creds.creds, creds.refused, token.token_file]
    files.append(mtls.client.key)
    for path in files:
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_creds_file_holds_the_users_jwt_and_seed_in_their_armour() -> None:
    user = natssecure.new_key(nkeys.PREFIX_BYTE_USER)
    text = natssecure.creds_text("header.claims.signature", user)
    lines = text.splitlines()
    jwt_at = lines.index("-----BEGIN NATS USER JWT-----")
    seed_at = lines.index("-----BEGIN USER NKEY SEED-----")
    assert lines[jwt_at + 1 : jwt_at + 3] == [
        "header.claims.signature",
        "------END NATS USER JWT------",
    ]
    assert lines[seed_at + 1] == user.seed.decode()
    assert lines[seed_at + 2] == "------END USER NKEY SEED------"
