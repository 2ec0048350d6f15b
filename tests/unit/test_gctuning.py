"""The controller process's garbage-collector setting."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from controller import gctuning


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = gc.get_threshold()
    monkeypatch.setattr(gctuning, "_tuned", False)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@pytest.mark.usefixtures("restored")
def test_tune_raises_only_the_young_generation_threshold() -> None:
    gc.set_threshold(700, 7, 9)
    gctuning.tune()
    assert gc.get_threshold() == (gctuning.YOUNG, 7, 9)
    assert gctuning.YOUNG > 700


@pytest.mark.usefixtures("restored")
def test_tune_freezes_what_exists_so_collections_skip_it() -> None:
    gc.unfreeze()
    kept = [object()]
    assert any(o is kept for o in gc.get_objects())
    gctuning.tune()
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())


@pytest.mark.usefixtures("restored")
def test_only_the_first_tune_of_a_process_freezes() -> None:
    gctuning.tune()
    gc.unfreeze()
    gc.set_threshold(700, 7, 9)
    gctuning.tune()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 7, 9)
