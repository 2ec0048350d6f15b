"""Label selectors in Kubernetes syntax: ``zone=a``, ``zone!=a``, ``gpu in (h100,a100)``,
``gpu notin (t4)``, ``draining``, ``!draining``; a comma means *and*.

`parse` turns the text a user typed into a `Selector`, or raises `SelectorError` naming the
position (1-based, in characters) where the text stops making sense and what was expected
there. `Selector.matches` is pure. Called by the CLI's ``-l/--selector`` options, ``export``,
``reconcile --once`` and the resolver's request. Knows nothing of storage: callers hand it the
labels of the objects they hold.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping

from runtimestate import echo
from runtimestate.desired import spec

SYNTAX = "zone=a, zone!=a, gpu in (h100,a100), gpu notin (t4), draining, !draining"

# A word is what a label key or value may be made of; the grammar checks which one it is.
_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z0-9][-_./A-Za-z0-9]*)|(?P<op>==|!=|=|!|\(|\)|,))")


class SelectorError(spec.SpecError):
    """A selector that does not parse; ``position`` is where (1-based) and the message says
    what was expected there."""

    def __init__(self, text: str, position: int, expected: str) -> None:
        super().__init__(
            "selector",
            f"{expected} at position {position} of {echo.quoted(text)} (selectors look like: "
            f"{SYNTAX}; a comma means and)",
        )
        self.position = position


class Operator(enum.StrEnum):
    EXISTS = "exists"
    NOT_EXISTS = "!"
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.operator:
            case Operator.EXISTS:
                return value is not None
            case Operator.NOT_EXISTS:
                return value is None
            case Operator.EQUALS | Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                # As in Kubernetes: an object without the key matches ``key!=v``.
                return value is None or value not in self.values

    def __str__(self) -> str:
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.NOT_EXISTS:
                return f"!{self.key}"
            case Operator.EQUALS | Operator.NOT_EQUALS:
                return f"{self.key}{self.operator.value}{self.values[0]}"
            case Operator.IN | Operator.NOT_IN:
                return f"{self.key} {self.operator.value} ({','.join(self.values)})"


@dataclasses.dataclass(frozen=True)
class Selector:
    """Every requirement must hold; no requirement selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = Selector()


@dataclasses.dataclass
class _Tokens:
    """The selector's tokens as (kind, text, 1-based position), read one at a time."""

    text: str
    items: list[tuple[str, str, int]]
    index: int = 0

    def peek(self) -> tuple[str, str, int]:
        if self.index < len(self.items):
            return self.items[self.index]
        return ("end", "", len(self.text.rstrip()) + 1)

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        self.index += 1
        return token

    def fail(self, expected: str) -> SelectorError:
        kind, found, position = self.peek()
        what = "the end" if kind == "end" else echo.quoted(found)
        return SelectorError(self.text, position, f"expected {expected}, found {what}")


def _tokenize(text: str) -> _Tokens:
    items: list[tuple[str, str, int]] = []
    at = 0
    while at < len(text.rstrip()):
        found = _TOKEN.match(text, at)
        if found is None:
            position = at + len(text[at:]) - len(text[at:].lstrip()) + 1
            raise SelectorError(
                text, position, f"unexpected character {echo.quoted(text[position - 1])}"
            )
        kind = "word" if found.group("word") else "op"
        items.append((kind, found.group(kind), found.start(kind) + 1))
        at = found.end()
    return _Tokens(text, items)


def parse(text: str) -> Selector:
    """The selector ``text`` describes; an empty or blank text selects everything.

    Raises `SelectorError` (a `spec.SpecError`: the CLI exits 2) naming the position."""
    tokens = _tokenize(text)
    if tokens.peek()[0] == "end":
        return EVERYTHING
    requirements = [_requirement(tokens)]
    while tokens.peek()[0] != "end":
        if tokens.take()[1] != ",":
            tokens.index -= 1
            raise tokens.fail("a comma between requirements")
        requirements.append(_requirement(tokens))
    return Selector(tuple(requirements))


def _requirement(tokens: _Tokens) -> Requirement:
    if tokens.peek()[1] == "!":
        tokens.take()
        return Requirement(_key(tokens), Operator.NOT_EXISTS)
    key = _key(tokens)
    kind, word, _ = tokens.peek()
    if kind == "end" or word == ",":
        return Requirement(key, Operator.EXISTS)
    if word in ("=", "==", "!="):
        tokens.take()
        operator = Operator.NOT_EQUALS if word == "!=" else Operator.EQUALS
        return Requirement(key, operator, (_value(tokens, allow_empty=True),))
    if kind == "word" and word in ("in", "notin"):
        tokens.take()
        return Requirement(key, Operator(word), _values(tokens))
    raise tokens.fail("=, !=, in, notin, a comma or the end")


def _key(tokens: _Tokens) -> str:
    kind, word, _ = tokens.peek()
    if kind != "word" or not spec.LABEL_KEY.match(word):
        raise tokens.fail("a label key (e.g. zone)")
    tokens.take()
    return word


def _value(tokens: _Tokens, *, allow_empty: bool) -> str:
    kind, word, _ = tokens.peek()
    if allow_empty and (kind == "end" or word == ","):
        return ""
    if kind != "word" or not spec.LABEL_VALUE.match(word):
        raise tokens.fail("a label value (e.g. eu-1)")
    tokens.take()
    return word


def _values(tokens: _Tokens) -> tuple[str, ...]:
    if tokens.peek()[1] != "(":
        raise tokens.fail("( opening the list of values")
    tokens.take()
    values = [_value(tokens, allow_empty=False)]
    while tokens.peek()[1] == ",":
        tokens.take()
        values.append(_value(tokens, allow_empty=False))
    if tokens.peek()[1] != ")":
        raise tokens.fail(", or ) closing the list of values")
    tokens.take()
    return tuple(values)
