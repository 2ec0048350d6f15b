"""`database.with_password`: the database password from ``LLMCTL_DATABASE_PASSWORD_FILE``."""

from __future__ import annotations

import pathlib

import pytest
import sqlalchemy as sa

from runtimestate import database

ENV = database.PASSWORD_FILE_ENV


def test_one_trailing_newline_is_stripped_and_the_rest_is_the_password(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "password"
    path.write_text("p@ss word\n\n")
    url = database.with_password(sa.make_url("postgresql://u@h/db"), {ENV: str(path)})
    assert url.password == "p@ss word\n"


def test_without_the_variable_or_for_sqlite_the_url_is_unchanged(tmp_path: pathlib.Path) -> None:
    plain = sa.make_url("postgresql://u@h/db")
    assert database.with_password(plain, {}) is plain
    assert database.with_password(plain, {ENV: ""}) is plain
    sqlite = sa.make_url(f"sqlite:///{tmp_path / 'x.db'}")
    assert database.with_password(sqlite, {ENV: str(tmp_path / "missing")}) is sqlite


def test_an_empty_password_file_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "password"
    path.write_text("\n")
    with pytest.raises(database.DatabaseUrlError, match="is empty"):
        database.with_password(sa.make_url("postgresql://u@h/db"), {ENV: str(path)})


def test_the_engine_url_carries_the_password_and_its_rendering_hides_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "password"
    path.write_text("hunter2\n")
    monkeypatch.setenv(ENV, str(path))
    url = database.async_url("postgresql://u@h/db")
    assert url.password == "hunter2"
    assert "hunter2" not in str(url) + repr(url)
