"""The test CA (`tests.certificates`): what it signs verifies against it, for its hosts only."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from tests import certificates


def _handshake(pair: certificates.Pair, ca: Path, hostname: str) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pair.cert, pair.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=str(ca))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=hostname),
            ):
                pass
        finally:
            thread.join(5)


def test_a_server_certificate_verifies_for_its_hosts_and_not_for_others(tmp_path: Path) -> None:
    ca = certificates.authority(tmp_path)
    pair = ca.issue(tmp_path, "server", hosts=("localhost", "127.0.0.1"))
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"
    _handshake(pair, ca.cert, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(pair, ca.cert, "db.example")
    other = certificates.authority(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _handshake(pair, other.cert, "localhost")
