"""The fix for a database connection that failed over TLS or on its password.

`runtimestate.database.describe` names a failed connection by libpq's first line, which says
what went wrong ("server certificate ... does not match host name", "no password supplied")
but not what to change in llmctl's configuration. `fix` gives that: a short clause naming the
URL parameter or the variable to set. Pure: it reads only the message, and never sees (so
never repeats) a password.
"""

from __future__ import annotations

PASSWORD_FILE_ENV = "LLMCTL_DATABASE_PASSWORD_FILE"  # noqa: S105 (a variable name, not a secret)

# (what libpq says, lower case; what to do about it), first match wins.
_FIXES: tuple[tuple[str, str], ...] = (
    (
        "does not match host name",
        "connect with a host name the server's certificate names (the URL's host), "
        "or give the server a certificate for this host",
    ),
    (
        "root certificate file",
        "give sslrootcert= the path of the CA certificate that signed the server's certificate",
    ),
    (
        "certificate verify failed",
        "give sslrootcert= the CA certificate that signed the server's certificate",
    ),
    (
        "ssl error",
        "check that sslrootcert= is the CA certificate that signed the server's certificate",
    ),
    (
        "no encryption",
        "the server requires TLS: add ?sslmode=verify-full&sslrootcert=/path/to/ca.crt "
        "to the database URL",
    ),
    (
        "server does not support ssl",
        "the server does not offer TLS: enable ssl on it, or drop sslmode from the URL",
    ),
    (
        "no password supplied",
        f"give the password in {PASSWORD_FILE_ENV} (a file holding it) or in the URL",
    ),
    (
        "password authentication failed",
        f"check the password ({PASSWORD_FILE_ENV} or the URL) and the user name",
    ),
)


def fix(message: str) -> str | None:
    """What to change for a connection that failed with ``message``; None when unknown."""
    lowered = message.lower()
    for symptom, remedy in _FIXES:
        if symptom in lowered:
            return remedy
    return None
