"""`dwqueue.natsauth`: the keyword arguments nats-py gets, files read once, refusals named with
their fix, and no secret ever shown; the NATS settings of ``serve`` built from them."""

from __future__ import annotations

import pathlib
import ssl

import nats.errors
import pytest

from controller import settings
from dwqueue import natsauth
from runtimestate import errors
from tests import certificates

NatsAuth = natsauth.NatsAuth


def test_options_carry_each_credential_and_no_tls_without_tls_settings(
    tmp_path: pathlib.Path,
) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    seed = tmp_path / "user.nk"
    seed.write_text("SUAEXAMPLE\n")
    auth = NatsAuth(creds_file=creds, nkey_file=seed, user="alice", password="pw", token="tk")
    assert auth.options("nats://127.0.0.1:4222") == {
        "user_credentials": str(creds),
        "nkeys_seed": str(seed),
        "user": "alice",
        "password": "pw",
        "token": "tk",
    }
    assert NatsAuth().options() == {}


def test_a_ca_file_turns_tls_on_verifying_the_certificate_and_the_host_name(
    tmp_path: pathlib.Path,
) -> None:
    ca = certificates.authority(tmp_path)
    context = NatsAuth(ca_file=ca.cert).options("nats://127.0.0.1:4222")["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1  # that CA alone, not the system's too


def test_a_tls_url_turns_tls_on_with_the_system_authorities() -> None:
    assert "tls" not in NatsAuth().options("nats://nats.example:4222")
    context = NatsAuth().options("tls://nats.example:4222")["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_client_certificate_is_loaded_and_one_without_its_key_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    ca = certificates.authority(tmp_path)
    client = ca.issue(tmp_path, "llmctl")
    auth = NatsAuth(ca_file=ca.cert, cert_file=client.cert, key_file=client.key)
    assert isinstance(auth.options()["tls"], ssl.SSLContext)
    with pytest.raises(natsauth.NatsAuthError, match="--nats-cert and --nats-key"):
        NatsAuth(cert_file=client.cert).options()
    (tmp_path / "other").mkdir()
    wrong = ca.issue(tmp_path / "other", "other")
    with pytest.raises(natsauth.NatsAuthError, match=r"--nats-cert .* \(nats_cert_file\)"):
        NatsAuth(cert_file=client.cert, key_file=wrong.key).options()


@pytest.mark.parametrize(
    ("field", "flag", "setting"),
    [
        ("creds_file", "--nats-creds", "nats_creds_file"),
        ("nkey_file", "--nats-nkey", "nats_nkey_file"),
        ("ca_file", "--nats-ca", "nats_ca_file"),
    ],
)
def test_a_missing_file_is_refused_naming_its_flag_and_setting(
    tmp_path: pathlib.Path, field: str, flag: str, setting: str
) -> None:
    missing = tmp_path / "nope"
    auth = NatsAuth(**{field: missing})  # type: ignore[arg-type]
    with pytest.raises(natsauth.NatsAuthError) as raised:
        auth.options()
    assert str(raised.value) == (
        f"cannot read {flag} {missing} ({setting}): no such file or directory; give a readable file"
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("creds_file", "--nats-creds {path} (nats_creds_file) is not a credentials file"),
        ("nkey_file", "--nats-nkey {path} (nats_nkey_file) is not an NKey user seed (SU...)"),
    ],
)
def test_a_credentials_or_seed_file_of_the_wrong_kind_is_refused_without_its_content(
    tmp_path: pathlib.Path, field: str, expected: str
) -> None:
    path = tmp_path / "secret"
    path.write_text("hunter2 is not a seed\n")
    with pytest.raises(natsauth.NatsAuthError) as raised:
        NatsAuth(**{field: path}).options()  # type: ignore[arg-type]
    assert str(raised.value).startswith(expected.format(path=path))
    assert "hunter2" not in str(raised.value)


def test_a_ca_file_that_is_not_a_certificate_is_refused(tmp_path: pathlib.Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(natsauth.NatsAuthError, match=r"--nats-ca .* is not a PEM CA bundle"):
        NatsAuth(ca_file=bogus).options()


def test_secret_files_are_read_at_once_with_one_trailing_newline_dropped(
    tmp_path: pathlib.Path,
) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret \n\n")
    token = tmp_path / "token"
    token.write_text("tok\n")
    auth = natsauth.from_values(user="alice", password_file=password, token_file=token)
    password.unlink()  # read once, at start
    assert (auth.password, auth.token) == ("s3cret \n", "tok")


def test_an_empty_or_unreadable_secret_file_is_refused_without_its_content(
    tmp_path: pathlib.Path,
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(natsauth.NatsAuthError, match=r"--nats-password-file .* is empty"):
        natsauth.from_values(password_file=empty)
    with pytest.raises(natsauth.NatsAuthError, match=r"cannot read --nats-token-file"):
        natsauth.from_values(token_file=tmp_path / "missing")


def test_a_secret_and_its_file_together_are_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "password"
    path.write_text("pw")
    with pytest.raises(natsauth.NatsAuthError, match="nats_password or nats_password_file"):
        natsauth.from_values(password="pw", password_file=path)
    with pytest.raises(natsauth.NatsAuthError, match="nats_token or nats_token_file"):
        natsauth.from_values(token="tk", token_file=path)


def test_from_environment_reads_the_llmctl_nats_variables(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    environ = {
        "LLMCTL_NATS_USER": "alice",
        "LLMCTL_NATS_PASSWORD": "pw",
        "LLMCTL_NATS_TOKEN_FILE": str(token),
        "LLMCTL_NATS_CA_FILE": "/etc/ca.pem",
    }
    auth = NatsAuth.from_environment(environ)
    assert auth == NatsAuth(
        user="alice", password="pw", token="from-file", ca_file=pathlib.Path("/etc/ca.pem")
    )
    assert NatsAuth.from_environment({}) == NatsAuth()


def test_repr_never_shows_a_password_or_token(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = NatsAuth(user="alice", password="hunter2-pw", token="hunter2-tk")
    assert "hunter2" not in repr(auth)
    assert "alice" in repr(auth)
    monkeypatch.setenv("LLMCTL_NATS_PASSWORD", "hunter2-pw")
    monkeypatch.setenv("LLMCTL_NATS_TOKEN", "hunter2-tk")
    loaded = settings.load()
    assert "hunter2" not in repr(loaded)
    assert "hunter2" not in str(loaded.model_dump())
    assert loaded.nats_auth().password == "hunter2-pw"


def test_a_password_file_flag_beats_a_password_in_the_environment(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "password"
    path.write_text("from-flag\n")
    monkeypatch.setenv("LLMCTL_NATS_PASSWORD", "from-env")
    assert settings.load().nats_auth().password == "from-env"
    assert settings.load(nats_password_file=path).nats_auth().password == "from-flag"


def test_a_password_and_its_file_in_the_settings_are_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "llmctl.yaml"
    config.write_text(f"nats_password_file: {tmp_path / 'pw'}\n")
    monkeypatch.setenv("LLMCTL_NATS_PASSWORD", "from-env")
    with pytest.raises(errors.ConfigurationError, match="nats_password or nats_password_file"):
        settings.load(config)


URL = "nats://127.0.0.1:4222"


def _verify_failed(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(
    ("exc", "url", "refusal", "expected"),
    [
        (
            nats.errors.Error("nats: 'Authorization Violation'"),
            URL,
            True,
            "NATS at nats://127.0.0.1:4222 refused the credentials (Authorization Violation): "
            "check --nats-creds, --nats-nkey, --nats-user with --nats-password-file, or "
            "--nats-token-file (or their LLMCTL_NATS_* settings)",
        ),
        (nats.errors.AuthorizationError(), URL, True, "refused the credentials"),
        (
            _verify_failed("self-signed certificate in certificate chain"),
            "tls://127.0.0.1:4222",
            True,
            "the TLS certificate of NATS at tls://127.0.0.1:4222 is not trusted (self-signed "
            "certificate in certificate chain): give the CA bundle that signed it with --nats-ca",
        ),
        (
            _verify_failed("unable to get local issuer certificate"),
            URL,
            True,
            "requires TLS and its certificate is not trusted (unable to get local issuer "
            "certificate): use a tls:// URL and give the CA that signed it with --nats-ca",
        ),
        (_verify_failed("Hostname mismatch"), URL, True, "connect by a name the certificate lists"),
        (
            nats.errors.Error("nats: 'Secure Connection - TLS Required'"),
            URL,
            True,
            "requires TLS, which is not configured: use a tls:// URL, with --nats-ca",
        ),
        (
            ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert"),
            URL,
            True,
            "give --nats-cert and --nats-key",
        ),
        (
            FileNotFoundError(2, "No such file or directory", "/secrets/user.creds"),
            URL,
            True,
            "cannot read the NATS credentials file /secrets/user.creds (no such file or "
            "directory): check --nats-creds or --nats-nkey",
        ),
        (
            ConnectionRefusedError(111, "Connect call failed"),
            URL,
            False,
            "cannot connect to NATS at nats://127.0.0.1:4222: [Errno 111] Connect call failed; "
            "check the URL and that nats-server runs",
        ),
        (TimeoutError(), URL, False, "cannot connect to NATS at nats://127.0.0.1:4222"),
        (
            nats.errors.Error("nats: client certificate required"),
            URL,
            True,
            "requires a client certificate: give --nats-cert and --nats-key",
        ),
        (
            nats.errors.Error("nats: tls not offered by the server"),
            "tls://127.0.0.1:4222",
            True,
            "does not offer TLS, but TLS was asked for",
        ),
    ],
)
def test_describe_says_what_failed_and_which_setting_fixes_it(
    exc: BaseException, url: str, refusal: bool, expected: str
) -> None:
    line = natsauth.describe(exc, url)
    assert expected in line
    assert "\n" not in line
    assert natsauth.is_refusal(exc) is refusal


def test_describe_never_shows_a_password_in_the_url() -> None:
    line = natsauth.describe(
        nats.errors.Error("nats: 'Authorization Violation'"), "nats://alice:hunter2@nats:4222"
    )
    assert "hunter2" not in line
    assert "nats://alice:***@nats:4222" in line
