"""The HTTP endpoint's settings (issue 20): a token given once, TLS files given together, the
token never shown, and which addresses count as loopback."""

from __future__ import annotations

import os
import pathlib

import pytest

from controller import httpauth, settings
from runtimestate import errors


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    for name in [n for n in os.environ if n.startswith("LLMCTL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_a_token_and_a_token_file_together_are_refused_naming_both(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="http_token or http_token_file, not both"):
        settings.load(http_token="abc", http_token_file=tmp_path / "token")


def test_an_empty_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_HTTP_TOKEN", "")
    with pytest.raises(errors.ConfigurationError, match="http_token is empty"):
        settings.load()


@pytest.mark.parametrize("given", ["http_tls_cert_file", "http_tls_key_file"])
def test_a_tls_certificate_without_its_key_or_a_key_alone_is_refused(
    given: str, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(errors.ConfigurationError, match="http_tls_cert_file and http_tls_key_file"):
        settings.load(**{given: tmp_path / "file.pem"})


def test_the_token_from_the_environment_is_never_shown_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMCTL_HTTP_TOKEN", "s3cr3t-token-value")
    loaded = settings.load()
    assert loaded.http_token is not None
    assert loaded.http_token.get_secret_value() == "s3cr3t-token-value"
    assert "s3cr3t-token-value" not in repr(loaded) + str(loaded)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("controller.internal", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert httpauth.is_loopback(host) is loopback
