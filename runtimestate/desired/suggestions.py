"""Suggestions for a mistyped name: the stored names one edit away from it ("did you mean").

Called by the store modules when a name is not found (`runtimestate.desired.store.NotFound`),
with the names stored of that kind. One edit is inserting, deleting or substituting one
character, or swapping two adjacent ones (a Damerau distance of 1). Every name that close is
suggested, sorted, as git lists its close commands; none when no name is that close. Pure: no
I/O, and no knowledge of which kind of name it compares (the caller passes the key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from runtimestate import echo

# More close names than this are counted, not listed: `gpu-10` is one edit from every `gpu-1N`.
MAX_LISTED = 5


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with exactly one character inserted, deleted or substituted, or
    two adjacent characters swapped. Equal strings are not: they are zero edits apart."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        first, second = diffs[0], diffs[-1]
        return (
            len(diffs) == 2
            and second == first + 1
            and (a[first], a[second])
            == (
                b[second],
                b[first],
            )
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def close(name: str, candidates: Iterable[str], key: Callable[[str], str] = str) -> tuple[str, ...]:
    """The ``candidates`` whose ``key`` is one edit from ``name``'s, sorted, each once."""
    wanted = key(name)
    return tuple(sorted({c for c in candidates if one_edit_apart(wanted, key(c))}))


def phrase(found: Sequence[str]) -> str:
    """``did you mean 'gpu-1'?`` or ``did you mean 'gpu-1' or 'gpu-2'?``; ``found`` not empty."""
    listed = [echo.quoted(name) for name in found[:MAX_LISTED]]
    more = len(found) - len(listed)
    if more:
        return f"did you mean {', '.join(listed)} or one of {more} more?"
    if len(listed) == 1:
        return f"did you mean {listed[0]}?"
    return f"did you mean {', '.join(listed[:-1])} or {listed[-1]}?"
