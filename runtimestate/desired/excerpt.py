"""A part of an export: the documents of some kinds whose labels match a selector.

Called by ``llmctl export --kind KIND -l SELECTOR`` on the documents `manifest.export` builds,
before they are written. A document is kept when its kind is among the chosen ones and its
``metadata.labels`` (none: empty) match the selector, so models and pools are selected the same
way as backends once they carry labels. A kept pool's members are written as declared: applying
the excerpt where a member is neither in the file nor in the database fails naming it, so
`missing_members` lists them for the command to warn about. Pure: reads no database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runtimestate import echo
from runtimestate.desired import names, selectors, spec

KINDS = ("Backend", "Model", "Pool", "Adapter")
_BY_LOWER = {kind.lower(): kind for kind in KINDS}


def kinds(given: Iterable[str]) -> frozenset[str]:
    """The kinds ``given`` names (repeated or comma-separated, any case); none: every kind.

    Raises `spec.SpecError` (the CLI exits 2) naming the kinds there are."""
    found: set[str] = set()
    for text in given:
        for word in text.split(","):
            kind = _BY_LOWER.get(word.strip().lower())
            if kind is None:
                raise spec.SpecError(
                    "--kind", f"{echo.quoted(word.strip())} is not one of {', '.join(KINDS)}"
                )
            found.add(kind)
    return frozenset(found or KINDS)


@dataclasses.dataclass(frozen=True)
class Excerpt:
    kinds: frozenset[str] = frozenset(KINDS)
    selector: selectors.Selector = selectors.EVERYTHING

    def keeps(self, doc: Mapping[str, Any]) -> bool:
        labels = doc["metadata"].get("labels") or {}
        return doc["kind"] in self.kinds and self.selector.matches(labels)

    def cut(self, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents this excerpt keeps, in their order."""
        return [doc for doc in docs if self.keeps(doc)]


def missing_members(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each pool among ``docs``, the members it names that ``docs`` do not declare."""
    declared = {
        (doc["kind"], _compared(doc["kind"], doc["metadata"]["name"]))
        for doc in docs
        if doc["kind"] != "Pool"
    }
    missing = []
    for doc in docs:
        if doc["kind"] != "Pool":
            continue
        for kind, field in (("Backend", "backends"), ("Model", "models"), ("Adapter", "adapters")):
            for member in doc["spec"].get(field, ()):
                if (kind, _compared(kind, member)) not in declared:
                    missing.append(f"pool/{doc['metadata']['name']} names {kind.lower()}/{member}")
    return missing


def _compared(kind: str, name: str) -> object:
    # Models compare as Ollama compares them (llama3 is llama3:latest), as pools hold them.
    return names.key(name, spec.BackendType.OLLAMA) if kind == "Model" else name
