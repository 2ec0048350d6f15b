"""API keys as a user stores them, and a provider that echoes them back: never shown anywhere."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
import sqlalchemy as sa
from aiohttp import web
from cryptography import fernet

from controller import httpapi, metrics
from dwqueue import flushing
from runtimestate import credentials, database, state
from runtimestate.desired import schema
from tests.e2e.conftest import Cli, Result, dump

KEY = "sk-proj-" + secrets.token_urlsafe(36)
SENT = web.AppKey("sent", list[str])
BACKENDS = schema.BackendRow.__table__


async def _models(request: web.Request) -> web.Response:
    """An OpenAI-style 401 that echoes the key it was sent: whole, a prefix and a suffix."""
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
    request.app[SENT].append(sent)
    message = (
        f"Incorrect API key provided: {sent}. Its first characters are {sent[:11]}, "
        f"its last {sent[-9:]}. You can find your API key at https://platform.openai.com."
    )
    error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
    return web.json_response({"error": error}, status=401)


@pytest.fixture
async def provider() -> AsyncIterator[tuple[str, list[str]]]:
    """A stub OpenAI-compatible provider on 127.0.0.1: its base URL and the keys it received."""
    app = web.Application()
    app[SENT] = []
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", app[SENT]
    finally:
        await runner.cleanup()


def _leaks(text: str) -> list[str]:
    """The pieces of KEY found in ``text``: the whole key, or 8+ characters of either end."""
    return [piece for piece in (KEY, KEY[:8], KEY[-8:]) if piece in text]


async def _v1_state(database_url: str, environ: dict[str, str]) -> str:
    """``/v1/state`` of a controller that ran one backend cycle on the same database."""
    engine = database.create_async_engine(database_url)
    runtime = state.State(engine, environ=environ)
    server = None
    try:
        await runtime.run_backend_cycle()

        async def ready() -> dict[str, str | None]:
            return {}

        sources = httpapi.Sources(metrics=metrics.Metrics(), ready=ready, snapshot=runtime.get)
        server = httpapi.Server(sources, "127.0.0.1", 0)
        await server.start()
        address = f"http://127.0.0.1:{server.port}/v1/state"
        async with aiohttp.ClientSession() as session, session.get(address) as response:
            assert response.status == 200
            return await response.text()
    finally:
        if server is not None:
            await server.stop()
        await runtime.aclose()
        await engine.dispose()


@pytest.mark.parametrize("kind", ["env", "stdin"])
async def test_a_key_the_provider_echoes_in_its_error_is_masked_in_every_output(
    llmctl: Cli,
    database_url: str,
    nats_url: str,
    nats_prefix: str,
    provider: tuple[str, list[str]],
    kind: str,
) -> None:
    url, sent = provider
    if kind == "env":
        env = {"CLOUD_KEY": KEY}
        how, stdin = ["--api-key-env", "CLOUD_KEY"], None
    else:
        env = {"LLMCTL_SECRET_KEY": secrets.token_urlsafe(32)}
        how, stdin = ["--api-key-stdin"], KEY + "\n"
    added = await asyncio.to_thread(
        llmctl, "backend", "add", "cloud", "--url", url, "--type", "openai", *how,
        input=stdin, env=env,
    )  # fmt: skip
    assert added.code == 0, added.err
    nats_args = ("--nats-url", nats_url, "--subject-prefix", nats_prefix)
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(f"{nats_prefix}.v1.state.cloud")
        await flushing.flush(nc, 10)  # the server has the SUB
        table = await asyncio.to_thread(llmctl, *nats_args, "reconcile", "--once", env=env)
        published = (await sub.next_msg(timeout=10)).data.decode()
    finally:
        await nc.close()
    assert sent == [KEY]  # the provider did get the key, and echoed it

    def run(*args: str) -> str:
        result = llmctl(*args, env=env)
        return result.out + result.err

    outputs = {
        "reconcile": table.out + table.err,
        "reconcile -o json": await asyncio.to_thread(run, "reconcile", "--once", "-o", "json"),
        "backend list": await asyncio.to_thread(run, "backend", "list"),
        "backend list -o json": await asyncio.to_thread(run, "backend", "list", "-o", "json"),
        "backend get": await asyncio.to_thread(run, "backend", "get", "cloud"),
        "backend get -o json": await asyncio.to_thread(
            run, "backend", "get", "cloud", "-o", "json"
        ),
        "database": str(await asyncio.to_thread(dump, database_url)),
        "NATS state message": published,
        "/v1/state": await _v1_state(database_url, env),
    }
    for where, text in outputs.items():
        assert not _leaks(text), f"{where} shows the key: {text}"
        assert "Incorrect API key provided: ****" in text, f"{where} lost the error: {text}"
    status = json.loads(outputs["backend get -o json"])["status"]
    assert status["phase"] == "Unreachable"
    assert "Its first characters are ****, its last ****." in status["error"]
    assert "unauthorized" in json.dumps(status["conditions"])


# --- the secret key: strength, rotation, a key that cannot be decrypted -----------------------

OLD = "Zq3-old-secret-key-0123456789abcdefXY"
NEW = "Hk8_new-secret-key-9876543210fedcbaQW"


def _add(llmctl: Cli, name: str, url: str, api_key: str, secret_key: str) -> Result:
    return llmctl(
        "backend", "add", name, "--url", url, "--type", "openai", "--api-key-stdin",
        "--no-pool", input=api_key + "\n", env={"LLMCTL_SECRET_KEY": secret_key},
    )  # fmt: skip


def _ciphertexts(database_url: str) -> dict[str, str | None]:
    engine = database.create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(BACKENDS.c.name, BACKENDS.c.credential_ciphertext))
            return {name: ciphertext for name, ciphertext in rows}
    finally:
        engine.dispose()


def _store_in_first_format(database_url: str, name: str, api_key: str, secret_key: str) -> None:
    """What an install from before the salted derivation holds: Fernet under SHA-256(key)."""
    digest = hashlib.sha256(secret_key.encode()).digest()
    token = fernet.Fernet(base64.urlsafe_b64encode(digest)).encrypt(api_key.encode()).decode()
    engine = database.create_sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.update(BACKENDS)
                .where(BACKENDS.c.name == name)
                .values(credential_ciphertext=token)
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("secret_key", ["", "short-but-random-9Xq", "k" * 32])
def test_a_weak_or_missing_secret_key_is_refused_with_exit_2_and_nothing_written(
    llmctl: Cli, database_url: str, secret_key: str
) -> None:
    before = dump(database_url)
    added = _add(llmctl, "cloud", "https://api.example.com/v1", "sk-never-stored", secret_key)
    assert added.code == 2, added.out + added.err
    assert "LLMCTL_SECRET_KEY" in added.err
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in added.err
    assert "Traceback" not in added.err
    assert dump(database_url) == before
    rotated = llmctl("secrets", "rotate", env={"LLMCTL_SECRET_KEY": secret_key})
    assert rotated.code == 2, rotated.out + rotated.err
    assert "secrets.token_urlsafe(32)" in rotated.err
    assert dump(database_url) == before


async def test_secrets_rotate_keeps_every_stored_key_readable(
    llmctl: Cli, database_url: str, provider: tuple[str, list[str]]
) -> None:
    url, sent = provider
    keys = {"cloud-a": "sk-alpha-0123456789", "cloud-b": "sk-bravo-9876543210"}
    for name, api_key in keys.items():
        added = await asyncio.to_thread(_add, llmctl, name, url, api_key, OLD)
        assert added.code == 0, added.err
    await asyncio.to_thread(_store_in_first_format, database_url, "cloud-b", keys["cloud-b"], OLD)
    both = {"LLMCTL_SECRET_KEY": NEW, "LLMCTL_SECRET_KEY_PREVIOUS": OLD}
    before = await asyncio.to_thread(dump, database_url)

    dry = await asyncio.to_thread(llmctl, "secrets", "rotate", "--dry-run", env=both)
    assert dry.code == 0, dry.err
    assert "would re-encrypt 2 stored API keys" in dry.out
    assert "nothing written" in dry.out
    assert await asyncio.to_thread(dump, database_url) == before

    done = await asyncio.to_thread(llmctl, "secrets", "rotate", env=both)
    assert done.code == 0, done.err
    assert "re-encrypted 2 stored API keys under LLMCTL_SECRET_KEY (2 from" in done.out
    after = await asyncio.to_thread(_ciphertexts, database_url)
    for name, api_key in keys.items():
        ciphertext = after[name]
        assert ciphertext is not None
        assert ciphertext.startswith("v2:")
        assert api_key not in done.out + str(after)
        stored = credentials.Credentials(
            credentials.CredentialKind.ENCRYPTED, ciphertext=ciphertext
        )
        secret = credentials.resolve(stored, {"LLMCTL_SECRET_KEY": NEW})
        assert secret is not None
        assert secret.reveal() == api_key
    # The controller, given only the new key, sends each backend its own key.
    cycle = await asyncio.to_thread(llmctl, "reconcile", "--once", env={"LLMCTL_SECRET_KEY": NEW})
    assert credentials.UNDECRYPTABLE not in cycle.out
    assert sorted(sent) == sorted(keys.values())
    again = await asyncio.to_thread(llmctl, "secrets", "rotate", env={"LLMCTL_SECRET_KEY": NEW})
    assert "re-encrypted 2 stored API keys under LLMCTL_SECRET_KEY (0 from" in again.out


def test_secrets_rotate_changes_nothing_when_a_stored_key_opens_with_neither(
    llmctl: Cli, database_url: str
) -> None:
    assert _add(llmctl, "cloud-a", "https://a.example.com/v1", "sk-a-0123456789", OLD).code == 0
    assert _add(llmctl, "cloud-b", "https://b.example.com/v1", "sk-b-0123456789", NEW).code == 0
    before = dump(database_url)
    result = llmctl("secrets", "rotate", env={"LLMCTL_SECRET_KEY": NEW})
    assert result.code == 2, result.out + result.err
    assert "cloud-a" in result.err
    assert "cloud-b" not in result.err
    assert "LLMCTL_SECRET_KEY_PREVIOUS" in result.err
    assert "nothing was changed" in result.err
    assert dump(database_url) == before


@pytest.mark.parametrize("environ", [{}, {"LLMCTL_SECRET_KEY": NEW}], ids=["unset", "another"])
async def test_a_backend_whose_key_cannot_be_decrypted_says_so_in_its_condition(
    llmctl: Cli, provider: tuple[str, list[str]], environ: dict[str, str]
) -> None:
    url, sent = provider
    added = await asyncio.to_thread(_add, llmctl, "cloud", url, "sk-lost-0123456789", OLD)
    assert added.code == 0, added.err
    result = await asyncio.to_thread(llmctl, "reconcile", "--once", env=environ)
    assert result.code == 0, result.err
    assert sent == []  # nothing was sent without the key
    shown = await asyncio.to_thread(llmctl, "backend", "get", "cloud", "-o", "json")
    status = shown.json()["status"]
    expected = (
        "cannot be decrypted: LLMCTL_SECRET_KEY is not set (or is not the key it was stored with)"
    )
    assert status["error"] == expected
    assert status["phase"] == "Unreachable"
    assert expected in [c["message"] for c in status["conditions"]]
    assert "encrypt" not in result.out.replace("decrypted", "")
