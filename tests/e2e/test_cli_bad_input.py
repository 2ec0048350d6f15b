"""Bad input: exit code 2, a message naming the field and the fix, and nothing written."""

from __future__ import annotations

import pathlib

import pytest

from tests.e2e.conftest import Cli, dump

GOOD_FILE = """
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-1}
spec: {type: ollama, url: "http://10.0.0.5:11434"}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "llama3.2:1b"}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat}
spec: {backends: [gpu-1], models: ["llama3.2:1b"]}
"""

ADD = ("backend", "add")


def _seed(llmctl: Cli) -> None:
    assert llmctl(*ADD, "seed", "--url", "http://seed:11434", "--type", "ollama").code == 0
    assert llmctl("model", "add", "llama3").code == 0
    assert llmctl("pool", "create", "chat").code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (*ADD, "GPU_1", "--url", "http://h:1", "--type", "ollama"),
            "backend name 'GPU_1' is not a DNS label",
        ),
        (
            (*ADD, "gpu-1", "--url", "ftp://h", "--type", "ollama"),
            "url: 'ftp://h' is not an http or https URL",
        ),
        ((*ADD, "gpu-1", "--url", "h:11434", "--type", "ollama"), "is not an http or https URL"),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "llamacpp"),
            "type: 'llamacpp' is not one of ollama|vllm|openai|gemini",
        ),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "ollama", "--prune", "some"),
            "prune: 'some' is not one of none|managed|all",
        ),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "ollama", "--max-pulls", "0"),
            "maxPulls: 0 must be a whole number from 1 to 64",
        ),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "ollama", "--label", "zone"),
            "'zone' is not of the form key=value",
        ),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "ollama", "--pool", "nope"),
            "pool 'nope' does not exist",
        ),
        (
            (
                *ADD,
                "gpu-1",
                "--url",
                "http://h:1",
                "--type",
                "ollama",
                "--pool",
                "chat",
                "--no-pool",
            ),
            "--pool and --no-pool contradict",
        ),
        (
            (*ADD, "seed", "--url", "http://h:1", "--type", "ollama"),
            "backend 'seed' already exists",
        ),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "openai", "--api-key-env", "1BAD"),
            "is not an environment variable name",
        ),
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "openai", "--api-key-stdin"),
            "LLMCTL_SECRET_KEY is not set",
        ),
        # Counts are digits only: int() would take 1_0 as 10; 0 is refused, not ignored.
        (
            (*ADD, "gpu-1", "--url", "http://h:1", "--type", "ollama", "--max-pulls", "1_0"),
            "Invalid value for '--max-pulls': '1_0' is not a whole number",
        ),
        (("backend", "update", "seed", "--max-pulls", "2.0"), "'2.0' is not a whole number"),
        (("backend", "update", "seed", "--max-pulls", "true"), "'true' is not a whole number"),
        (("model", "add", "qwen2", "--context-length", "+8192"), "'+8192' is not a whole number"),
        (
            ("model", "update", "llama3", "--context-length", "0"),
            "contextLength: 0 must be a positive whole number of tokens",
        ),
        (("model", "add", "llama 3"), "model name 'llama 3' is empty or contains whitespace"),
        (("model", "add", "llama3:-bad"), "has an invalid tag '-bad'"),
        (("model", "add", "llama3:latest"), "model 'llama3:latest' already exists (as 'llama3')"),
        (
            ("model", "add", "qwen2", "--capability", "vision"),
            "'vision' is not one of chat|embed|prompt|stream",
        ),
        (("model", "add", "qwen2", "--pool", "nope"), "pool 'nope' does not exist"),
        (("pool", "create", "Chat Pool"), "pool name 'Chat Pool' is not a DNS label"),
        (("pool", "create", "chat"), "pool 'chat' already exists"),
        (("pool", "add-backend", "chat", "nope"), "backend 'nope' does not exist"),
        (("pool", "add-model", "chat", "nope"), "model 'nope' does not exist"),
        (("pool", "add-backend", "nope", "seed"), "pool 'nope' does not exist"),
        (("pool", "delete", "default"), "the default pool cannot be deleted"),
        (("pool", "update", "nope", "--purpose", "x"), "pool 'nope' does not exist"),
        (("pool", "update", "chat", "--purpose", "a\x07b"), "purpose: must be printable text"),
        (("backend", "update", "nope", "--max-pulls", "2"), "backend 'nope' does not exist"),
        (("backend", "update", "seed", "--url", "gopher://h"), "is not an http or https URL"),
        (("backend", "delete", "nope"), "backend 'nope' does not exist"),
        (("model", "delete", "nope"), "model 'nope' does not exist"),
        (("model", "get", "a/b/c/d"), "model name 'a/b/c/d' has more than host/namespace/model"),
        (("model", "delete", "a b"), "model name 'a b' is empty or contains whitespace"),
        # Text with "[" is shown as typed, never taken for rich markup (it used to crash).
        (("downloads", "get", "[/x]"), "'[/x]' is not a download id"),
        (
            ("downloads", "list", "--state", "[/bold]"),
            "--state: '[/bold]' is not one of queued|running|succeeded|failed|cancelled|active",
        ),
        (
            ("downloads", "cancel", "--backend", "b", "--model", "[/b]x"),
            "model name '[/b]x' has an invalid namespace '['",
        ),
        (
            (*ADD, "[/x]", "--url", "http://h:1", "--type", "ollama"),
            "backend name '[/x]' is not a DNS label",
        ),
        (("model", "add", "[red]x[/red]"), "model name '[red]x[/red]' has an invalid namespace"),
        (("backend", "get", "[/x]"), "backend '[/x]' does not exist"),
        (("pool", "create", "[bold]"), "pool name '[bold]' is not a DNS label"),
        (
            ("--nats-url", "nats://127.0.0.1:1", "watch", "--backend", "gpu.1"),
            "--backend: backend name 'gpu.1' is not a DNS label (lower-case letters, digits "
            "and '-', 1 to 63 characters, e.g. gpu-1); give the name of a declared backend, as "
            "llmctl backend list shows it, or leave --backend out to watch every backend",
        ),
        (
            ("--nats-url", "nats://127.0.0.1:1", "--subject-prefix", "a b", "watch"),
            "--subject-prefix: subject prefix 'a b' must be dot-separated [A-Za-z0-9_-] tokens",
        ),
    ],
)
def test_bad_command_line_input_exits_2_and_writes_nothing(
    llmctl: Cli, database_url: str, args: tuple[str, ...], message: str
) -> None:
    _seed(llmctl)
    before = dump(database_url)
    result = llmctl(*args)
    assert result.code == 2, (result.out, result.err)
    assert message in " ".join(result.err.split()), result.err
    assert dump(database_url) == before


BAD_FILES = {
    "malformed YAML": ("kind: [Backend\n", "is not valid YAML"),
    "one invalid document among valid ones": (
        GOOD_FILE + "---\napiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: gpu-2}\n"
        "spec: {type: ollama, url: 'not a url'}\n",
        "fleet.yaml: document 4 (Backend gpu-2): spec.url:",
    ),
    "an invalid model name": (
        GOOD_FILE.replace('"llama3.2:1b"}\n---', '"llama 3.2"}\n---'),
        "empty or contains whitespace",
    ),
    "a pool naming a missing backend": (
        GOOD_FILE.replace("backends: [gpu-1]", "backends: [gpu-1, gpu-9]"),
        "backend 'gpu-9' is neither in the file nor declared",
    ),
    "a duplicate": (
        GOOD_FILE + "---\n" + GOOD_FILE.split("---")[0],
        "fleet.yaml: documents 1 and 4 both declare Backend 'gpu-1'",
    ),
    "an unknown kind": ("apiVersion: llmctl/v1\nkind: Node\nmetadata: {name: a}\n", "kind"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_exits_2_and_applies_nothing(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path, case: str
) -> None:
    _seed(llmctl)
    text, message = BAD_FILES[case]
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    before = dump(database_url)
    result = llmctl("apply", "-f", str(path))
    assert result.code == 2, (result.out, result.err)
    assert "nothing was applied" in result.err or message in result.err
    assert message in " ".join(result.err.split()), result.err
    assert dump(database_url) == before


def test_a_missing_file_exits_2(llmctl: Cli, tmp_path: pathlib.Path) -> None:
    result = llmctl("apply", "-f", str(tmp_path / "missing.yaml"))
    assert result.code == 2
    assert "cannot read" in result.err


def test_an_unsupported_database_url_exits_2(llmctl: Cli) -> None:
    from typer.testing import CliRunner

    from controller import cli

    result = CliRunner().invoke(cli.app, ["--database-url", "mysql://h/db", "backend", "list"])
    assert result.exit_code == 2
    assert "unsupported database 'mysql'" in result.stderr


HUGE = "x" * 20_971_520  # 20 MB, as the field trial gave it


@pytest.mark.parametrize(
    "args",
    [
        (*ADD, HUGE, "--url", "http://h:1", "--type", "ollama"),
        (*ADD, "gpu-1", "--url", "http://h:1", "--type", HUGE),
        (*ADD, "gpu-1", "--url", HUGE, "--type", "ollama"),
        (*ADD, "gpu-1", "--url", "http://h:1", "--type", "ollama", "--label", HUGE),
        ("model", "add", HUGE + " x"),
        ("pool", "create", HUGE.upper()),
        ("backend", "get", HUGE),
        ("pool", "update", HUGE, "--purpose", "x"),
        ("resolve", HUGE + "!"),
        ("downloads", "get", HUGE),
    ],
    ids=lambda args: " ".join(a if len(a) < 20 else "HUGE" for a in args),
)
def test_a_20_mb_value_is_echoed_in_under_1_kb(
    llmctl: Cli, database_url: str, args: tuple[str, ...]
) -> None:
    _seed(llmctl)
    before = dump(database_url)
    result = llmctl(*args)
    assert result.code == 2, result.err[:200]
    assert len(result.err.encode()) < 1024, result.err[:2000]
    assert "… (2097" in " ".join(result.err.split()), result.err
    assert dump(database_url) == before


def test_a_20_mb_name_in_a_file_is_echoed_in_under_1_kb(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path
) -> None:
    _seed(llmctl)
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD_FILE.replace("name: gpu-1}", f"name: {HUGE}}}"))
    before = dump(database_url)
    result = llmctl("apply", "-f", str(path))
    assert result.code == 2, result.err[:200]
    assert len(result.err.encode()) < 1024, result.err[:2000]
    assert "… (20971520 characters)" in " ".join(result.err.split()), result.err
    assert dump(database_url) == before


NOT_UTF8 = {
    "random bytes": b"\x93\x8a\xc3(\xfe\x01apiVersion",
    "UTF-16 with a byte-order mark": GOOD_FILE.encode("utf-16"),
    "UTF-16 without a byte-order mark": GOOD_FILE.encode("utf-16-le"),
    "Latin-1": GOOD_FILE.replace("chat}", "caf\xe9}").encode("latin-1"),
}


@pytest.mark.parametrize("case", list(NOT_UTF8))
@pytest.mark.parametrize("via", ["file", "stdin"])
def test_apply_refuses_a_file_that_is_not_utf8(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path, case: str, via: str
) -> None:
    _seed(llmctl)
    path = tmp_path / "fleet.yaml"
    path.write_bytes(NOT_UTF8[case])
    before = dump(database_url)
    if via == "file":
        result = llmctl("apply", "-f", str(path))
        source = str(path)
    else:
        result = llmctl("apply", "-f", "-", input=NOT_UTF8[case])  # type: ignore[arg-type]
        source = "<stdin>"
    assert result.code == 2, result.err
    assert f"{source}: is not UTF-8 text" in result.err
    assert "save it as UTF-8" in result.err
    assert "Traceback" not in result.err
    assert dump(database_url) == before


def test_a_bad_file_with_a_long_path_is_named_whole(llmctl: Cli, tmp_path: pathlib.Path) -> None:
    # Echoes of user input are cut at 80 characters; a path cut there names no file.
    directory = tmp_path / ("deeply-nested-" * 6) / ("fleet-definitions-" * 4)
    directory.mkdir(parents=True)
    path = directory / "fleet.yaml"
    path.write_bytes(NOT_UTF8[next(iter(NOT_UTF8))])
    assert len(str(path)) > 160
    result = llmctl("apply", "-f", str(path))
    assert result.code == 2, result.err
    assert f"{path}: is not UTF-8 text" in result.err
    assert "characters)" not in result.err


def test_apply_takes_utf8_with_a_byte_order_mark(llmctl: Cli, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_FILE.encode())
    result = llmctl("apply", "-f", str(path))
    assert result.code == 0, result.err
    assert "backend/gpu-1 created" in result.out


SEVEN_PROBLEMS = """\
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-1}
spec: {type: ollama, url: "ftp://h", maxPulls: true}
---
- a list
---
apiVersion: llmctl/v1
kind: Node
metadata: {name: x}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: llama3}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "llama3:latest"}
spec: {contextLength: "8192"}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat}
spec: {backends: [gpu-1, seed, gpu-9]}
"""


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_apply_lists_every_problem_of_a_file_in_one_run(
    llmctl: Cli, database_url: str, tmp_path: pathlib.Path, via: str
) -> None:
    _seed(llmctl)
    path = tmp_path / "fleet.yaml"
    path.write_text(SEVEN_PROBLEMS)
    before = dump(database_url)
    if via == "file":
        result, source = llmctl("apply", "-f", str(path)), str(path)
    else:
        result, source = llmctl("apply", "-f", "-", input=SEVEN_PROBLEMS), "<stdin>"
    assert result.code == 2, result.err
    lines = [line.strip() for line in result.err.splitlines()]
    assert lines[0] == f"error: {source} is not valid, nothing was applied (7 problems):"
    assert lines[1:] == [
        f"{source}: document 1 (Backend gpu-1): spec.url: 'ftp://h' is not an http or https "
        "URL; give an http:// or https:// URL such as http://10.0.0.5:11434",
        f"{source}: document 1 (Backend gpu-1): spec.maxPulls: must be a whole number, "
        "not true (a boolean)",
        f"{source}: document 2: must be a mapping with apiVersion, kind, metadata and spec, "
        "not a list",
        f"{source}: document 3: kind: must be one of Backend|Model|Pool|Adapter, not 'Node'",
        f"{source}: document 5 (Model llama3:latest): spec.contextLength: must be a whole "
        "number, not '8192' (a string)",
        f"{source}: documents 4 and 5 both declare Model 'llama3:latest' "
        "(as 'llama3', 'llama3:latest'); declare each once",
        f"{source}: document 6 (Pool chat): spec.backends: backend 'gpu-9' is neither in the "
        "file nor declared",
    ]
    assert dump(database_url) == before


READ_COMMANDS = [
    ("backend", "list"),
    ("backend", "get", "gpu-1"),
    ("model", "list"),
    ("model", "get", "llama3"),
    ("pool", "list"),
    ("pool", "get", "default"),
    ("export",),
    ("downloads", "list"),
    ("downloads", "get", "01J00000000000000000000000"),
    ("resolve", "llama3"),
    ("db", "current"),
    ("db", "downgrade", "base"),
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("missing", ["directory", "file"])
def test_read_commands_refuse_a_missing_sqlite_database_and_create_nothing(
    tmp_path: pathlib.Path, args: tuple[str, ...], missing: str
) -> None:
    from typer.testing import CliRunner

    from controller import cli

    parent = tmp_path / "nonexistent" / "dir"
    if missing == "file":
        parent.mkdir(parents=True)
    path = parent / "x.db"
    result = CliRunner().invoke(cli.app, ["--database-url", f"sqlite:///{path}", *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    message = " ".join(result.stderr.split())
    assert f"no llmctl database at {path}" in message
    assert "llmctl db upgrade" in message
    assert not path.exists()
    assert parent.exists() == (missing == "file")
    assert sorted(p.name for p in parent.parent.parent.iterdir()) == (
        ["nonexistent"] if missing == "file" else []
    )


def test_a_read_command_on_the_default_database_creates_no_data_directory(
    tmp_path: pathlib.Path,
) -> None:
    from typer.testing import CliRunner

    from controller import cli

    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        cli.app,
        ["backend", "list"],
        env={"LLMCTL_DATA_DIR": str(data_dir), "LLMCTL_DATABASE_URL": None},
    )
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert f"no llmctl database at {data_dir / 'llmctl.db'}" in " ".join(result.stderr.split())
    assert not data_dir.exists()
    added = CliRunner().invoke(
        cli.app,
        ["backend", "add", "gpu-1", "--url", "http://10.0.0.5:11434", "--type", "ollama"],
        env={"LLMCTL_DATA_DIR": str(data_dir), "LLMCTL_DATABASE_URL": None},
    )
    assert added.exit_code == 0, added.stderr  # a command that writes creates it, as documented
    assert (data_dir / "llmctl.db").is_file()


LONG = "z" * 5_000


@pytest.mark.parametrize(
    "args",
    [
        ("resolve", "llama3", "--policy", LONG),
        ("resolve", "llama3", f"--policy={LONG}"),
        ("backend", "list", "-o", LONG),
        ("backend", "list", LONG),
        (f"--{LONG}",),
    ],
    ids=["choice", "choice with =", "output", "extra argument", "unknown option"],
)
def test_a_long_value_in_a_command_line_error_is_cut_to_80_characters(
    llmctl: Cli, database_url: str, args: tuple[str, ...]
) -> None:
    before = dump(database_url)
    result = llmctl(*args)
    assert result.code == 2, result.err[:300]
    flat = " ".join(result.err.replace("│", " ").split())
    assert "… (5000 characters)" in flat or "… (5002 characters)" in flat, flat[:600]
    assert len(result.err.encode()) < 1500, result.err[:600]
    assert dump(database_url) == before


@pytest.mark.parametrize("args", [("backend", "list"), ("db", "upgrade")], ids=" ".join)
def test_a_database_a_newer_llmctl_migrated_is_refused_in_one_line_and_left_as_it_is(
    tmp_path: pathlib.Path, args: tuple[str, ...]
) -> None:
    import sqlite3

    from typer.testing import CliRunner

    from controller import cli

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    assert CliRunner().invoke(cli.app, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    with sqlite3.connect(tmp_path / "newer.db") as connection:  # as a later version leaves it
        connection.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    result = CliRunner().invoke(cli.app, ["--database-url", url, *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    message = " ".join(result.stderr.split())
    assert "schema revision 0099_from_the_future, which this llmctl does not know" in message
    assert "a newer llmctl migrated it" in message
    assert "Traceback" not in result.stderr
    with sqlite3.connect(tmp_path / "newer.db") as connection:
        (at,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert at == "0099_from_the_future"
