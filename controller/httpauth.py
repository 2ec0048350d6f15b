"""Who may read the controller's HTTP endpoints: the bearer token of ``/v1/state``, the rule
that a non-loopback listener needs one, and TLS for the listener.

``/metrics``, ``/healthz`` and ``/readyz`` stay open (Prometheus and the kubelet's probes
carry no token); every other path needs ``Authorization: Bearer <token>`` when a token is
configured, compared in constant time, else 401 with ``WWW-Authenticate: Bearer``.

Called by `controller.settings` (`check_settings`: the settings that cannot go together), by
`controller.composition` at start (`Access.from_settings`: reads the token file and the
certificate, refuses an unprotected non-loopback address) and by `controller.httpapi`
(`middleware`). It must not log or echo a token.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import ssl
from typing import TYPE_CHECKING

from dwqueue import secretfiles

if TYPE_CHECKING:  # aiohttp is imported where it is used: settings import this module
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware

    from controller.settings import Settings


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
TOKEN_FILE_ENV = "LLMCTL_HTTP_TOKEN_FILE"  # noqa: S105 (the variable's name, not a token)
_CHALLENGE = 'Bearer realm="llmctl"'


class Refused(RuntimeError):
    """The endpoint cannot start as configured (exit 1); the message says what to set."""


def check_settings(config: Settings) -> None:
    """Raise ValueError for HTTP settings that cannot go together (settings validation)."""
    if config.http_token is not None and config.http_token_file is not None:
        raise ValueError("give http_token or http_token_file, not both")
    if config.http_token is not None and not config.http_token.get_secret_value():
        raise ValueError("http_token is empty; set a token or unset it")
    if (config.http_tls_cert_file is None) != (config.http_tls_key_file is None):
        raise ValueError("give http_tls_cert_file and http_tls_key_file together, or neither")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (from ``http_address``) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclasses.dataclass(frozen=True)
class Access:
    """The token ``/v1/state`` requires (None: open) and the listener's TLS context."""

    token: str | None = dataclasses.field(default=None, repr=False)
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, config: Settings, host: str) -> Access:
        """Read the token file and the certificate; raises `Refused` when one cannot be
        read, or when ``host`` is not loopback and there is no token (unless
        ``http_allow_unauthenticated``)."""
        token = _token(config)
        if token is None and not is_loopback(host) and not config.http_allow_unauthenticated:
            raise Refused(
                f"refusing to serve /v1/state on the non-loopback address "
                f"{config.http_address} without a token: set {TOKEN_FILE_ENV} (a file holding "
                "a random token), or http_allow_unauthenticated: true to serve it to anyone"
            )
        return cls(token=token, tls=_tls(config))

    def middleware(self) -> Middleware:
        """An aiohttp middleware asking for the token on every path but `OPEN_PATHS`."""
        from aiohttp import web

        expected = None if self.token is None else self.token.encode()

        @web.middleware
        async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
            if expected is None or request.path in OPEN_PATHS:
                return await handler(request)
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given:
                return _unauthorized("a bearer token is required", _CHALLENGE)
            if not hmac.compare_digest(given.strip().encode(), expected):
                return _unauthorized(
                    "the bearer token is not valid", f'{_CHALLENGE}, error="invalid_token"'
                )
            return await handler(request)

        return bearer


def _unauthorized(message: str, challenge: str) -> web.Response:
    from aiohttp import web

    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": challenge}
    )


def _token(config: Settings) -> str | None:
    if config.http_token is not None:
        return config.http_token.get_secret_value()
    if config.http_token_file is None:
        return None
    try:
        return secretfiles.read(config.http_token_file, "the HTTP token file", "http_token_file")
    except secretfiles.SecretFileError as exc:
        raise Refused(str(exc)) from None


def _tls(config: Settings) -> ssl.SSLContext | None:
    if config.http_tls_cert_file is None or config.http_tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.http_tls_cert_file, config.http_tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Refused(
            f"cannot use the HTTP certificate {config.http_tls_cert_file} with the key "
            f"{config.http_tls_key_file}: {reason}; give a PEM certificate and its own key"
        ) from None
    return context
