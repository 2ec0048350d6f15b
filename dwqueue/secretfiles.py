"""Secrets kept in files: a password or a token read from a path an operator gives.

One reader for every secret llmctl takes from a file (a Kubernetes Secret or a systemd
credential mounted as a file): the NATS password and token (`dwqueue.natsauth`), the database
password (`runtimestate.database`) and the HTTP endpoint's token (`controller.httpauth`). In the
bottom layer so that all three can use it. One trailing line ending is stripped (what ``echo``
and editors add); the rest is the secret. Errors name the file and the setting it came from,
never its content; callers turn them into their own error types.
"""

from __future__ import annotations

import pathlib


class SecretFileError(ValueError):
    """The file cannot be read or holds nothing; the message names it and what to do."""


def read(path: pathlib.Path | str, what: str, setting: str) -> str:
    """The secret in ``path``. ``what`` names the file for messages (``the database password
    file``, ``--nats-password-file``) and ``setting`` where its path came from. Raises
    `SecretFileError`."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretFileError(
            f"cannot read {what} {path} ({setting}): {reason.lower()}; give a file the user "
            "running llmctl can read"
        ) from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise SecretFileError(f"{what} {path} ({setting}) is empty: write the secret into it")
    return secret
