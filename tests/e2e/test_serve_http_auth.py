"""Who may read ``serve``'s HTTP endpoints (issue 20): ``/v1/state`` needs the bearer token,
``/metrics``, ``/healthz`` and ``/readyz`` stay open, a non-loopback address without a token
is refused unless allowed, and the listener speaks HTTPS with a certificate."""

from __future__ import annotations

import os
import pathlib
import secrets
import ssl
import subprocess

import aiohttp
import pytest

from controller import composition, settings
from tests import certificates
from tests.e2e import serve_harness as h

NEVER = "0 0 1 1 *"  # no scheduled cycle during a test


async def fetch(
    url: str, token: str | None = None, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str]]:
    """(status, headers) of GET ``url``, with ``Authorization: Bearer <token>`` if given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url, headers=headers, ssl=tls if tls is not None else True) as response,
    ):
        await response.read()
        return response.status, dict(response.headers)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process settings read only what the test gives."""
    for name in [n for n in os.environ if n.startswith("LLMCTL_")]:
        monkeypatch.delenv(name)


def in_process(
    tmp_path: pathlib.Path, nats_url: str, prefix: str, **fields: object
) -> settings.Settings:
    return settings.Settings(
        database_url=f"sqlite:///{tmp_path / 'llmctl.db'}",
        nats_url=nats_url,
        subject_prefix=prefix,
        data_dir=tmp_path / "data",
        cycle_cron=NEVER,
        **fields,  # type: ignore[arg-type]
    )


async def test_state_on_a_non_loopback_address_needs_the_token_and_the_probes_stay_open(
    tmp_path: pathlib.Path, nats_url: str, nats_prefix: str
) -> None:
    token = secrets.token_urlsafe(32)
    token_file = tmp_path / "http-token"
    token_file.write_text(token + "\n")
    serve = h.Serve(tmp_path, f"sqlite:///{tmp_path / 'llmctl.db'}", nats_url, nats_prefix)
    serve.environ.update(
        LLMCTL_HTTP_ADDRESS=f"0.0.0.0:{serve.port}", LLMCTL_HTTP_TOKEN_FILE=str(token_file)
    )
    serve.start()
    try:
        await serve.ready()  # /readyz answered without a token
        status, headers = await fetch(serve.url + "/v1/state")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, headers = await fetch(serve.url + "/v1/state", token="not-" + token)
        assert status == 401
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert (await fetch(serve.url + "/v1/state", token=token))[0] == 200
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await fetch(serve.url + path))[0] == 200, path
    finally:
        serve.kill()
    assert token not in serve.logs()


def test_serve_refuses_a_non_loopback_address_without_a_token_and_writes_nothing(
    tmp_path: pathlib.Path,
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    environ.update(
        LLMCTL_DATA_DIR=str(tmp_path / "data"),
        LLMCTL_HTTP_ADDRESS="0.0.0.0:0",
        LLMCTL_NATS_URL="nats://127.0.0.1:1",
    )
    done = subprocess.run(
        [h.LLMCTL, "serve"], env=environ, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "0.0.0.0:0" in lines[0]
    assert "LLMCTL_HTTP_TOKEN_FILE" in lines[0]
    assert "http_allow_unauthenticated: true" in lines[0]
    assert not (tmp_path / "data").exists()


async def test_allowed_explicitly_state_is_served_without_a_token_on_any_address(
    tmp_path: pathlib.Path, nats_url: str, nats_prefix: str, clean_environment: None
) -> None:
    config = in_process(
        tmp_path, nats_url, nats_prefix, http_address="0.0.0.0:0", http_allow_unauthenticated=True
    )
    async with composition.Controller(config) as controller:
        assert (await fetch(f"http://127.0.0.1:{controller.http_port}/v1/state"))[0] == 200


async def test_the_listener_speaks_https_with_its_certificate_and_still_asks_for_the_token(
    tmp_path: pathlib.Path, nats_url: str, nats_prefix: str, clean_environment: None
) -> None:
    authority = certificates.authority(tmp_path / "ca")
    pair = authority.issue(tmp_path / "server", "llmctl", hosts=("127.0.0.1", "localhost"))
    token = secrets.token_urlsafe(32)
    config = in_process(
        tmp_path,
        nats_url,
        nats_prefix,
        http_address="127.0.0.1:0",
        http_token=token,
        http_tls_cert_file=pair.cert,
        http_tls_key_file=pair.key,
    )
    trusting = ssl.create_default_context(cafile=str(authority.cert))
    async with composition.Controller(config) as controller:
        base = f"https://127.0.0.1:{controller.http_port}"
        assert (await fetch(base + "/healthz", tls=trusting))[0] == 200
        assert (await fetch(base + "/v1/state", tls=trusting))[0] == 401
        assert (await fetch(base + "/v1/state", token=token, tls=trusting))[0] == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(base + "/healthz")  # the system's trust store does not know the CA
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"http://127.0.0.1:{controller.http_port}/healthz")  # plain HTTP


async def test_an_unreadable_token_file_stops_serve_at_start_naming_it(
    tmp_path: pathlib.Path, nats_url: str, nats_prefix: str, clean_environment: None
) -> None:
    missing = tmp_path / "no-token"
    config = in_process(tmp_path, nats_url, nats_prefix, http_token_file=missing)
    with pytest.raises(composition.StartError, match=f"cannot read the HTTP token file {missing}"):
        async with composition.Controller(config):
            pass
    assert not (tmp_path / "data").exists()
