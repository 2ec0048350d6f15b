"""``llmctl demo`` on a machine with no configuration: it converges, prints the backend list and
exits cleanly in under a minute."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

LLMCTL = str(pathlib.Path(sys.executable).parent / "llmctl")


def test_demo_converges_prints_the_backend_list_and_exits_in_under_a_minute(
    tmp_path: pathlib.Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env["HOME"] = str(tmp_path)  # a fresh user: no data directory, no configuration
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    started = time.monotonic()
    done = subprocess.run(
        [LLMCTL, "demo"], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < 60
    out = done.stdout
    assert "$ llmctl backend list" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line[:7] in ("ollama-", "vllm-a ")
    }
    assert set(rows) == {"ollama-a", "ollama-b", "vllm-a"}
    assert all(row[2] == "Ready" for row in rows.values()), out
    assert rows["ollama-a"][3] == "3/3"
    assert rows["vllm-a"][3] == "1/1"
    assert "converged in" in out
    assert not (tmp_path / "data" / "llmctl").exists()  # nothing left in the user's data dir
