"""``llmctl reconcile --once`` as cron jobs and scripts use it: plan, act, exit code."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from emulators import faults, ollama, vllm
from tests.e2e.conftest import Cli, dump

FLEET = """
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-0}}
spec: {{type: ollama, url: "{url0}"}}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: gpu-1}}
spec: {{type: ollama, url: "{url1}", maxPulls: 2}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "qwen2:0.5b"}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {{name: "llama3.2:1b"}}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {{name: main}}
spec: {{backends: [gpu-0, gpu-1], models: ["qwen2:0.5b", "llama3.2:1b"]}}
"""


def _apply(llmctl: Cli, tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    result = llmctl("apply", "-f", str(path))
    assert result.code == 0, result.err


def test_reconcile_wait_converges_a_fleet_and_exits_0(
    llmctl: Cli, tmp_path: pathlib.Path, database_url: str
) -> None:
    with ollama.in_thread(nodes=2, installed=["qwen2:0.5b"]) as emu:
        _apply(llmctl, tmp_path, FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1)))
        before = dump(database_url)
        dry = llmctl("reconcile", "--once", "--dry-run")
        assert dry.code == 0, dry.err
        assert "pull llama3.2:1b on gpu-0" in dry.out
        assert dump(database_url) == before
        assert emu.nodes[0].requests["POST /api/pull"] == 0
        done = llmctl("reconcile", "--once", "--wait", "--timeout", "60", "-o", "json")
        assert done.code == 0, done.out + done.err
        doc = done.json()
        assert doc["converged"] is True
        for node in range(2):
            assert {m.spec.name for m in emu.nodes[node].installed.values()} == {
                "qwen2:0.5b",
                "llama3.2:1b",
            }
        listed = {b["name"]: b["status"] for b in llmctl("backend", "list", "-o", "json").json()}
        assert listed["gpu-0"]["phase"] == "Ready"
        assert (listed["gpu-0"]["ready"], listed["gpu-0"]["desired"]) == (2, 2)
        table = llmctl("backend", "list").out
        assert "Ready" in table
        assert "2/2" in table
        got = llmctl("backend", "get", "gpu-1").out
        assert "ModelsReady" in got
        assert "llama3.2:1b" in got


def test_reconcile_wait_exits_1_when_a_backend_cannot_converge(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with vllm.in_thread(served_model_names=["other"]) as emu:
        text = (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: vllm-0}\n"
            f'spec: {{type: vllm, url: "{emu.url}"}}\n---\n'
            "apiVersion: llmctl/v1\nkind: Model\nmetadata: {name: wanted}\n---\n"
            "apiVersion: llmctl/v1\nkind: Pool\nmetadata: {name: p}\n"
            "spec: {backends: [vllm-0], models: [wanted]}\n"
        )
        _apply(llmctl, tmp_path, text)
        result = llmctl("reconcile", "--once", "--wait", "--timeout", "20")
        assert result.code == 1
        assert "drift on vllm-0: wanted declared not served" in result.out
        assert "not converged" in result.out


def test_reconcile_without_once_is_refused(llmctl: Cli) -> None:
    result = llmctl("reconcile")
    assert result.code == 2
    assert "give --once" in result.err


def test_reconcile_with_an_unreadable_hub_token_file_fails_in_one_line(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "hub-token"
    checks = {"LLMCTL_UPGRADE_CHECK_INTERVAL_S": "3600"}  # the token is read only for them
    result = llmctl("reconcile", "--once", env={"LLMCTL_HUB_TOKEN_FILE": str(missing), **checks})
    assert result.code == 2
    assert f"cannot read the hub token file {missing} (hub_token_file)" in result.err
    assert "Traceback" not in result.err + result.out


def _one_backend(url: str, prune: str, models: list[str]) -> str:
    docs = [
        "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: gpu-0}\n"
        f'spec: {{type: ollama, url: "{url}", prune: {prune}}}\n'
    ]
    docs += [f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "{m}"}}\n' for m in models]
    quoted = ", ".join(f'"{m}"' for m in models)
    docs.append(
        "apiVersion: llmctl/v1\nkind: Pool\nmetadata: {name: main}\n"
        f"spec: {{backends: [gpu-0], models: [{quoted}]}}\n"
    )
    return "---\n".join(docs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dry-run", "--wait"], "--dry-run and --wait cannot be combined"),
        (["--timeout", "5"], "--timeout limits --wait"),
        (["--wait", "--timeout", "nan"], "--timeout must be a positive number of seconds"),
        (["--wait", "--timeout", "inf"], "--timeout must be a positive number of seconds"),
        (["--wait", "--timeout", "0"], "--timeout must be a positive number of seconds"),
        (["--wait", "--timeout", "-3"], "--timeout must be a positive number of seconds"),
    ],
)
def test_conflicting_or_invalid_wait_options_exit_2_and_change_nothing(
    llmctl: Cli, tmp_path: pathlib.Path, database_url: str, args: list[str], message: str
) -> None:
    with ollama.in_thread() as emu:
        _apply(llmctl, tmp_path, _one_backend(emu.url, "managed", ["qwen2:0.5b"]))
        before = dump(database_url)
        result = llmctl("reconcile", "--once", *args)
        assert result.code == 2, result.out + result.err
        assert message in result.err
        assert dump(database_url) == before
        assert sum(emu.nodes[0].requests.values()) == 0


def test_a_wait_that_runs_out_of_time_says_so_and_exits_1(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with ollama.in_thread(pull_rate=1_000_000) as emu:  # qwen2:0.5b would take minutes
        _apply(llmctl, tmp_path, _one_backend(emu.url, "managed", ["qwen2:0.5b"]))
        table = llmctl("reconcile", "--once", "--wait", "--timeout", "1.5")
        assert table.code == 1, table.out + table.err
        assert "timed out after 1.5 s" in table.out
        doc = llmctl("reconcile", "--once", "--wait", "--timeout", "1", "-o", "json")
        assert doc.code == 1, doc.out + doc.err
        assert (doc.json()["timedOut"], doc.json()["waitTimeoutS"]) == (True, 1.0)
        assert doc.json()["converged"] is False


@pytest.mark.parametrize("source", ["environment", "config file"])
def test_reconcile_honours_the_settings_serve_reads(
    llmctl: Cli, tmp_path: pathlib.Path, database_url: str, source: str
) -> None:
    def given(setting: str, value: str) -> tuple[list[str], dict[str, str]]:
        if source == "environment":
            return [], {f"LLMCTL_{setting.upper()}": value}
        path = tmp_path / f"{setting}.yaml"
        path.write_text(f"{setting}: {value}\n")
        return ["--config", str(path)], {}

    with ollama.in_thread() as emu:
        _apply(llmctl, tmp_path, _one_backend(emu.url, "managed", ["qwen2:0.5b"]))
        emu.set_fault(faults.Fault(faults.FaultKind.HANG))
        args, env = given("cycle_deadline_s", "0.5")
        started = time.monotonic()
        # Without the setting the hung node would cost the 20 s request timeout.
        result = llmctl("reconcile", "--once", "-o", "json", *args, env=env)
        assert time.monotonic() - started < 10
        assert result.code == 0, result.out + result.err
        (backend,) = result.json()["backends"]
        assert backend["error"] == "the cycle deadline passed before it answered"
        before = dump(database_url)
        args, env = given("observe_concurrency", "0")
        bad = llmctl("reconcile", "--once", *args, env=env)
        assert bad.code == 2
        assert "observe_concurrency" in bad.err
        assert dump(database_url) == before


def test_downloads_of_a_deleted_backend_or_an_undeclared_model_are_cancelled_and_shown(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with ollama.in_thread(nodes=2) as emu:
        _apply(llmctl, tmp_path, FLEET.format(url0=emu.node_url(0), url1=emu.node_url(1)))
        queued = llmctl("reconcile", "--once")  # queues four pulls; nothing downloads them
        assert queued.code == 0, queued.err
        assert len(llmctl("downloads", "list", "-o", "json").json()) == 4
        smaller = FLEET.split("---")
        kept = "---".join([smaller[0], smaller[2], smaller[4]]).replace(
            'backends: [gpu-0, gpu-1], models: ["qwen2:0.5b", "llama3.2:1b"]',
            'backends: [gpu-0], models: ["qwen2:0.5b"]',
        )
        path = tmp_path / "smaller.yaml"
        path.write_text(kept.format(url0=emu.node_url(0)))
        applied = llmctl("apply", "-f", str(path), "--prune")
        assert applied.code == 0, applied.err
        result = llmctl("reconcile", "--once", "-o", "json")
        assert result.code == 0, result.out + result.err
        doc = {b["name"]: b for b in result.json()["backends"]}
        assert (doc["gpu-1"]["declared"], doc["gpu-1"]["phase"]) == (False, None)
        cancelled = {
            (name, a["model"], a["reason"])
            for name, b in doc.items()
            for a in b["actions"]
            if a["kind"] == "cancel" and a["done"]
        }
        assert cancelled == {
            ("gpu-0", "llama3.2:1b", "not_desired"),
            ("gpu-1", "llama3.2:1b", "backend_deleted"),
            ("gpu-1", "qwen2:0.5b", "backend_deleted"),
        }
        table = llmctl("reconcile", "--once", "--dry-run").out
        assert "gpu-1" not in table  # nothing left to do for it
        states = {
            (j["backend"], j["model"]): j["state"]
            for j in llmctl("downloads", "list", "-o", "json").json()
        }
        assert states == {
            ("gpu-0", "qwen2:0.5b"): "queued",
            ("gpu-0", "llama3.2:1b"): "cancelled",
            ("gpu-1", "qwen2:0.5b"): "cancelled",
            ("gpu-1", "llama3.2:1b"): "cancelled",
        }


def test_prune_all_through_the_cli_removes_undeclared_models_and_converges(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with ollama.in_thread(installed=["qwen2:0.5b", "nomic-embed-text", "llama3.2:1b"]) as emu:
        _apply(llmctl, tmp_path, _one_backend(emu.url, "all", ["qwen2:0.5b"]))
        result = llmctl("reconcile", "--once", "--wait", "--timeout", "60")
        assert result.code == 0, result.out + result.err
        assert "converged" in result.out
        assert {m.spec.name for m in emu.nodes[0].installed.values()} == {"qwen2:0.5b"}
        assert emu.nodes[0].requests["DELETE /api/delete"] == 2


@pytest.mark.parametrize("log_format", ["json", None])
def test_reconcile_once_writes_json_log_lines_when_told_or_when_stderr_is_not_a_terminal(
    tmp_path: pathlib.Path, log_format: str | None
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    environ["LLMCTL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'llmctl.db'}"
    environ["LLMCTL_DATA_DIR"] = str(tmp_path)
    if log_format is not None:
        environ["LLMCTL_LOG_FORMAT"] = log_format
    llmctl = str(pathlib.Path(sys.executable).parent / "llmctl")
    done = subprocess.run(
        [llmctl, "reconcile", "--once"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    cycle = [line for line in lines if line["event"] == "backend_cycle"]
    assert len(cycle) == 1, done.stderr
    assert cycle[0]["level"] == "info"
    assert cycle[0]["backends"] == 0
