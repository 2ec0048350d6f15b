"""Echoes: how a message repeats a value the user gave, cut so that the message stays readable.

Called by every error message that quotes user input (names, specs, the store, declarative
files, the CLI): a 20 MB name must not make a 20 MB message. Pure: no I/O.
"""

from __future__ import annotations

LIMIT = 80
PATH_LIMIT = 4096  # Linux's PATH_MAX: a path is shown whole, or the user cannot find the file


def quoted(value: object, limit: int = LIMIT) -> str:
    """``repr(value)``; past ``limit`` characters, its start, an ellipsis and its full length.

    ``quoted("x" * 20971520)`` is ``'xxx…x'… (20971520 characters)`` with 80 ``x``.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} characters)"
    return plain(repr(value), limit)


def plain(text: str, limit: int = LIMIT) -> str:
    """``text`` as it is, or cut as `quoted` cuts it: for file names and document titles."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def path(text: str) -> str:
    """A file or directory name the user gave, whole (a message that cuts it leaves the user
    guessing which file it means), unless it is longer than any real path can be."""
    return plain(text, PATH_LIMIT)
