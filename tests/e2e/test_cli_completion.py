"""Shell completion as a shell runs it: ``llmctl`` asked through the printed scripts' protocol.

One test runs the installed console script as the bash script does; the others drive the same
protocol (the ``_LLMCTL_COMPLETE`` variable and the shell's own variables) in-process, which
answers the same and costs no interpreter start-up per question.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from controller import cli, completion
from tests.e2e import test_cli_downloads as seed
from tests.e2e.conftest import Cli

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")


def _bash_variables(line: str) -> dict[str, str]:
    """What the bash script sets for ``line`` (the word under the cursor is its last one,
    empty after a trailing space)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    return {"COMP_WORDS": line, "COMP_CWORD": str(cword), completion.COMPLETE_VAR: "complete_bash"}


def complete(line: str, database_url: str | None, shell: str = "bash", **extra: str) -> list[str]:
    """The names ``llmctl`` answers for ``line``; it must exit 0 and print nothing else."""
    env: dict[str, str | None] = {"LLMCTL_DATABASE_URL": database_url, **extra}
    if shell == "bash":
        env.update(_bash_variables(line))
    else:
        env.update({completion.COMPLETE_VAR: f"complete_{shell}", "_TYPER_COMPLETE_ARGS": line})
    result = CliRunner().invoke(cli.app, [], env=env, prog_name="llmctl")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout.split("\n")[:-1] if shell == "zsh" else result.stdout.split()


@pytest.fixture
def fleet(llmctl: Cli, database_url: str) -> str:
    """Two backends, two models, a pool and a download; returns the download's id."""
    for name in ("gpu-1", "gpu-2"):
        added = llmctl("backend", "add", name, "--url", f"http://{name}:11434", "--type", "ollama")
        assert added.code == 0, added.err
    for model in ("llama3", "qwen2:0.5b"):
        assert llmctl("model", "add", model).code == 0
    assert llmctl("pool", "create", "big").code == 0
    return seed.enqueue(database_url, "gpu-1", "llama3").id


def test_the_installed_llmctl_answers_bash_with_the_backend_names_in_the_database(
    fleet: str, database_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCTL_", "_LLMCTL_"))}
    env.update(_bash_variables("llmctl backend get g"), LLMCTL_DATABASE_URL=database_url)
    result = subprocess.run(
        [LLMCTL], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout.split(), result.stderr) == (["gpu-1", "gpu-2"], "")


def test_backend_names_complete_from_the_database_for_get_update_and_delete(
    fleet: str, database_url: str
) -> None:
    for verb in ("get", "update", "delete"):
        assert complete(f"llmctl backend {verb} ", database_url) == ["gpu-1", "gpu-2"]
    assert complete("llmctl backend get gpu-2", database_url) == ["gpu-2"]
    assert complete("llmctl downloads list --backend g", database_url) == ["gpu-1", "gpu-2"]
    assert complete("llmctl pool add-backend big ", database_url) == ["gpu-1", "gpu-2"]


def test_model_pool_and_download_names_complete_from_the_database(
    fleet: str, database_url: str
) -> None:
    assert complete("llmctl model get ", database_url) == ["llama3", "qwen2:0.5b"]
    assert complete("llmctl pool add-model big q", database_url) == ["qwen2:0.5b"]
    assert complete("llmctl pool get ", database_url) == ["big", "default"]
    assert complete("llmctl backend add gpu-3 --pool b", database_url) == ["big"]
    assert complete("llmctl downloads cancel ", database_url) == [fleet]
    assert complete(f"llmctl downloads get {fleet[:3]}", database_url) == [fleet]
    assert complete("llmctl backend add ", database_url) == []  # a new name: nothing to offer


def test_completion_reads_the_database_named_on_the_line_before_or_after_the_command(
    fleet: str, database_url: str, tmp_path: pathlib.Path
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    before = f"llmctl --database-url {database_url} backend get "
    assert complete(before, other) == ["gpu-1", "gpu-2"]
    after = f"llmctl backend delete --database-url {database_url} "
    assert complete(after, other) == ["gpu-1", "gpu-2"]


def test_commands_complete_without_a_database(tmp_path: pathlib.Path) -> None:
    missing = f"sqlite:///{tmp_path / 'llmctl.db'}"
    assert "get" in complete("llmctl backend ", missing)
    assert complete("llmctl comp", missing) == ["completion"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://llmctl:hunter2@127.0.0.1:1/llmctl",  # nothing listens
        "sqlite:///{tmp}/missing/llmctl.db",  # never created by a completion
        "sqlite:///{tmp}/empty.db",  # a file that is not an llmctl database
        "mysql://somewhere/db",  # not a URL llmctl takes
    ],
    ids=["unreachable", "missing", "not-llmctl", "bad-url"],
)
def test_a_database_that_cannot_be_read_completes_nothing_silently_and_creates_nothing(
    url: str, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert complete("llmctl backend get ", url.format(tmp=tmp_path)) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_zsh_and_fish_get_the_names_in_their_own_formats(fleet: str, database_url: str) -> None:
    zsh = complete("llmctl pool get ", database_url, "zsh")
    assert zsh == ['_arguments \'*: :(("big"', '"default"))\'']
    fish = complete(
        "llmctl pool get ", database_url, "fish", _TYPER_COMPLETE_FISH_ACTION="get-args"
    )
    assert fish == ["big", "default"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_script_of_each_shell(shell: str) -> None:
    result = CliRunner().invoke(cli.app, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert "llmctl" in result.stdout
    assert f"{completion.COMPLETE_VAR}=complete_{shell}" in result.stdout


def test_completion_of_an_unknown_shell_exits_2_naming_the_shells() -> None:
    result = CliRunner().invoke(cli.app, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "bash" in result.stderr
    assert "tcsh" in result.stderr
