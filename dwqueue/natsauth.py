"""What an llmctl NATS client presents to the server: credentials and TLS.

`NatsAuth` holds one client's credentials (a ``.creds`` file with a JWT and NKey seed, an NKey
seed file, a user and password, or a token) and its TLS material (a CA bundle, a client
certificate and key). `NatsAuth.options` turns them into the keyword arguments of nats-py's
``connect``; `from_values` and `from_environment` build one from settings, reading password and
token files once, at start. `describe` turns a failed connect into the one line a user reads:
what went wrong and which setting or flag fixes it; `is_refusal` tells a refusal (credentials,
TLS: retrying cannot help) from an outage.

Built by the composition roots (`controller.settings`, the CLI root, `Resolver.from_database`)
and passed to every connect site (`dwqueue.connector`). It must not import nats (the CLI imports
it for every command) and must never put a secret in a message, a log or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

# Each field of NatsAuth that is a file, as the user names it: (setting, flag).
SETTINGS = {
    "creds_file": ("nats_creds_file", "--nats-creds"),
    "nkey_file": ("nats_nkey_file", "--nats-nkey"),
    "password_file": ("nats_password_file", "--nats-password-file"),
    "token_file": ("nats_token_file", "--nats-token-file"),
    "ca_file": ("nats_ca_file", "--nats-ca"),
    "cert_file": ("nats_cert_file", "--nats-cert"),
    "key_file": ("nats_key_file", "--nats-key"),
}
ENV_PREFIX = "LLMCTL_"
CREDENTIAL_FLAGS = (
    "--nats-creds, --nats-nkey, --nats-user with --nats-password-file, or --nats-token-file"
)


class NatsRefused(ConnectionError):
    """NATS cannot be used with these credentials or this TLS setup; retrying cannot help.

    The message is the one line to show (`describe`)."""


class NatsAuthError(NatsRefused):
    """A NATS credential or TLS setting cannot be used (unreadable file, conflicting values);
    found before connecting. The message names the setting and its flag."""


class NatsUnreachable(ConnectionError):
    """No NATS server answered at the URL; the message is the one line to show."""


@dataclasses.dataclass(frozen=True)
class NatsAuth:
    """One client's credentials and TLS material; all unset: an anonymous plain connection."""

    creds_file: pathlib.Path | None = None
    nkey_file: pathlib.Path | None = None
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    ca_file: pathlib.Path | None = None
    cert_file: pathlib.Path | None = None
    key_file: pathlib.Path | None = None

    @property
    def wants_tls(self) -> bool:
        return any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    def options(self, url: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` / ``Client.connect``.

        With a CA, a client certificate or a ``tls://`` ``url``, ``tls=`` is an
        `ssl.SSLContext` that verifies the server's certificate and host name. Raises
        `NatsAuthError` naming the setting when a file cannot be read or is not valid.
        """
        found: dict[str, Any] = {}
        if self.creds_file is not None:
            _holds(
                self.creds_file, "creds_file", "-----BEGIN NATS USER JWT-----", "a credentials file"
            )
            found["user_credentials"] = str(self.creds_file)
        if self.nkey_file is not None:
            _holds(self.nkey_file, "nkey_file", "SU", "an NKey user seed (SU...)", first=True)
            found["nkeys_seed"] = str(self.nkey_file)
        if self.user is not None:
            found["user"] = self.user
        if self.password is not None:
            found["password"] = self.password
        if self.token is not None:
            found["token"] = self.token
        if self.wants_tls or is_tls_url(url):
            found["tls"] = self.ssl_context()
        return found

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: the CA bundle given (else the system's), host names checked, and
        the client certificate when one is given. Raises `NatsAuthError`."""
        if (self.cert_file is None) != (self.key_file is None):
            raise NatsAuthError(
                "a NATS client certificate needs both --nats-cert and --nats-key "
                "(nats_cert_file and nats_key_file)"
            )
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file is not None:  # then only that CA: the system's are not trusted too
            _readable(self.ca_file, "ca_file")
            try:
                context = ssl.create_default_context(cafile=str(self.ca_file))
            except ssl.SSLError as exc:
                raise _invalid("ca_file", self.ca_file, "not a PEM CA bundle", exc) from None
        if self.cert_file is not None and self.key_file is not None:
            _readable(self.cert_file, "cert_file")
            _readable(self.key_file, "key_file")
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except ssl.SSLError as exc:
                raise _invalid(
                    "cert_file", self.cert_file, "not a PEM certificate matching the key", exc
                ) from None
        return context

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> NatsAuth:
        """From the ``LLMCTL_NATS_*`` variables (``LLMCTL_NATS_CREDS_FILE``, ...,
        ``LLMCTL_NATS_PASSWORD`` or ``LLMCTL_NATS_PASSWORD_FILE``, ...). Raises
        `NatsAuthError`."""
        env = os.environ if environ is None else environ
        names = (*FIELDS, "password_file", "token_file")
        given = {name: env.get(f"{ENV_PREFIX}NATS_{name.upper()}") or None for name in names}
        return from_values(**given)


FIELDS = tuple(f.name for f in dataclasses.fields(NatsAuth))


def from_values(
    *,
    creds_file: str | pathlib.Path | None = None,
    nkey_file: str | pathlib.Path | None = None,
    user: str | None = None,
    password: str | None = None,
    password_file: str | pathlib.Path | None = None,
    token: str | None = None,
    token_file: str | pathlib.Path | None = None,
    ca_file: str | pathlib.Path | None = None,
    cert_file: str | pathlib.Path | None = None,
    key_file: str | pathlib.Path | None = None,
) -> NatsAuth:
    """A `NatsAuth` from settings, the password and token read from their files now.

    A password (or token) and its file together are refused. Raises `NatsAuthError`.
    """
    if password is not None and password_file is not None:
        raise NatsAuthError("give nats_password or nats_password_file, not both")
    if token is not None and token_file is not None:
        raise NatsAuthError("give nats_token or nats_token_file, not both")
    if password_file is not None:
        password = read_secret(pathlib.Path(password_file), "password_file")
    if token_file is not None:
        token = read_secret(pathlib.Path(token_file), "token_file")
    return NatsAuth(
        creds_file=_path(creds_file),
        nkey_file=_path(nkey_file),
        user=user,
        password=password,
        token=token,
        ca_file=_path(ca_file),
        cert_file=_path(cert_file),
        key_file=_path(key_file),
    )


def describe(exc: BaseException, url: str) -> str:
    """The one line to show for a failed connect to ``url``: what went wrong and what to set.

    Covers refused credentials, an untrusted certificate, TLS the server requires but the
    client lacks (or the other way round), a failed handshake, an unreadable or invalid
    credentials file, and an unreachable server. Never includes a secret.
    """
    return str(failure(exc, url))


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` means NATS refuses this client (retrying cannot help), not an outage."""
    return isinstance(failure(exc, "nats://"), NatsRefused)


# What the server (or `dwqueue.connector`) said, and the line for it: {where} is the URL,
# {said} the server's words.
_SAID = (
    (
        ("authorization",),
        "NATS at {where} refused the credentials ({said}): check "
        + CREDENTIAL_FLAGS
        + " (or their LLMCTL_NATS_* settings)",
    ),
    (
        ("tls required", "secure connection"),
        "NATS at {where} requires TLS, which is not configured: use a tls:// URL, with "
        "--nats-ca naming the CA that signed its certificate",
    ),
    (
        ("client certificate required",),
        "NATS at {where} requires a client certificate: give --nats-cert and --nats-key "
        "(nats_cert_file, nats_key_file)",
    ),
    (
        ("tls not offered",),
        "NATS at {where} does not offer TLS, but TLS was asked for (a tls:// URL or "
        "--nats-ca/--nats-cert): enable TLS on the server, or drop the TLS options",
    ),
)


def failure(exc: BaseException, url: str) -> NatsRefused | NatsUnreachable:
    """``exc`` of a connect to ``url`` as `NatsRefused` or `NatsUnreachable`, with the
    `describe` line as its message (the caller raises it ``from exc``)."""
    if isinstance(exc, NatsRefused | NatsUnreachable):
        return exc
    where = redact(url)
    text = str(exc) or type(exc).__name__
    for markers, line in _SAID:
        if any(marker in text.lower() for marker in markers):
            return NatsRefused(line.format(where=where, said=_quoted(text)))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return NatsRefused(_untrusted(exc, url, where))
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or text
        return NatsRefused(
            f"the TLS handshake with NATS at {where} failed ({reason}): if the "
            "server requires a client certificate give --nats-cert and --nats-key; check --nats-ca"
        )
    if isinstance(exc, OSError) and exc.filename is not None:
        return NatsRefused(
            f"cannot read the NATS credentials file {exc.filename} "
            f"({(exc.strerror or text).lower()}): check --nats-creds or --nats-nkey"
        )
    if type(exc).__module__.split(".")[0] == "nkeys" or isinstance(exc, ValueError | KeyError):
        return NatsRefused(
            f"the NATS credentials file or NKey seed is not valid ({type(exc).__name__}): "
            "check --nats-creds or --nats-nkey"
        )
    return NatsUnreachable(
        f"cannot connect to NATS at {where}: {text}; check the URL and that nats-server runs"
    )


def _untrusted(exc: ssl.SSLCertVerificationError, url: str, where: str) -> str:
    reason = exc.verify_message or getattr(exc, "reason", None) or "certificate verify failed"
    if "hostname" in reason.lower() or "ip address" in reason.lower():
        return (
            f"the TLS certificate of NATS at {where} does not name that host ({reason}): "
            "connect by a name the certificate lists"
        )
    if not is_tls_url(url):
        return (
            f"NATS at {where} requires TLS and its certificate is not trusted ({reason}): "
            "use a tls:// URL and give the CA that signed it with --nats-ca (nats_ca_file)"
        )
    return (
        f"the TLS certificate of NATS at {where} is not trusted ({reason}): give the CA "
        "bundle that signed it with --nats-ca (nats_ca_file)"
    )


def _quoted(text: str) -> str:
    return text.removeprefix("nats: ").strip("'")


def read_secret(path: pathlib.Path, field: str) -> str:
    """The secret in ``path`` without one trailing newline. Raises `NatsAuthError` (naming
    the setting, never the content) when it cannot be read or is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(field, path, exc) from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        setting, flag = SETTINGS[field]
        raise NatsAuthError(f"{flag} {path} ({setting}) is empty: write the secret into it")
    return secret


def is_tls_url(url: str | None) -> bool:
    return url is not None and urllib.parse.urlsplit(url).scheme == "tls"


def redact(url: str) -> str:
    """``url`` without a password or token in it (``nats://user:***@host``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***" if parts.password is not None else "***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}{port}"))


def _path(value: str | pathlib.Path | None) -> pathlib.Path | None:
    return None if value is None else pathlib.Path(value).expanduser()


def _readable(path: pathlib.Path, field: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _unreadable(field, path, exc) from None


def _holds(path: pathlib.Path, field: str, marker: str, what: str, *, first: bool = False) -> None:
    """Raise `NatsAuthError` unless ``path`` can be read and holds ``marker`` (at its start
    with ``first``). Checked here: nats-py's errors for a wrong file name no file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise _unreadable(field, path, exc) from None
    if not (text.lstrip().startswith(marker) if first else marker in text):
        setting, flag = SETTINGS[field]
        raise NatsAuthError(f"{flag} {path} ({setting}) is not {what}: check the file")


def _unreadable(field: str, path: pathlib.Path, exc: Exception) -> NatsAuthError:
    setting, flag = SETTINGS[field]
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return NatsAuthError(
        f"cannot read {flag} {path} ({setting}): {reason.lower()}; give a readable file"
    )


def _invalid(field: str, path: pathlib.Path, what: str, exc: ssl.SSLError) -> NatsAuthError:
    setting, flag = SETTINGS[field]
    return NatsAuthError(
        f"{flag} {path} ({setting}) is {what} ({getattr(exc, 'reason', None) or exc})"
    )
