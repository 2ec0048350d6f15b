"""``llmctl demo`` on a machine with no configuration: it converges, prints the backend list and
exits cleanly in under a minute."""

from __future__ import annotations

import os
import pathlib
import signal
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
        if line[:7] in ("ollama-", "vllm-a ", "node-a ")
    }
    assert set(rows) == {"ollama-a", "ollama-b", "vllm-a", "node-a"}
    assert all(row[2] == "Ready" for row in rows.values()), out
    assert rows["ollama-a"][3] == "3/3"
    assert rows["vllm-a"][3] == "1/1"
    assert rows["node-a"][3] == "1/1"  # the weights pulled and the instance ready
    assert "converged in" in out
    assert not (tmp_path / "data" / "llmctl").exists()  # nothing left in the user's data dir


def test_demo_keep_running_prints_the_converged_fleet_before_it_is_stopped(
    tmp_path: pathlib.Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env["HOME"] = str(tmp_path)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [LLMCTL, "demo", "--keep-running"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("converged in") for line in seen):
            line = proc.stdout.readline()
            assert line, "".join(seen)  # the demo exited before converging
            assert time.monotonic() < deadline, "".join(seen)
            seen.append(line)
        # Converged and still running: the fleet was printed while the demo is up.
        assert proc.poll() is None
        out = "".join(seen)
        rows = {
            line.split()[0]: line.split()
            for line in seen
            if line[:7] in ("ollama-", "vllm-a ", "node-a ")
        }
        assert set(rows) == {"ollama-a", "ollama-b", "vllm-a", "node-a"}, out
        assert all(row[2] == "Ready" for row in rows.values()), out
        assert out.index("$ llmctl backend list") < out.index("converged in")
        assert "running; Ctrl-C to stop" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "everything stopped and cleaned up." in rest
    assert "$ llmctl backend list" not in rest  # printed once, at convergence


def test_demo_without_the_node_extra_leaves_the_agent_out_and_still_converges(
    tmp_path: pathlib.Path,
) -> None:
    # `pip install .` without [node]: huggingface_hub cannot be imported (None in sys.modules).
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['huggingface_hub'] = None\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(hide))
    done = subprocess.run(
        [LLMCTL, "demo"], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "node agent left out: its extra is not installed" in done.stdout
    assert "declared: 3 backends, 4 models in 2 pools" in done.stdout
    listed = done.stdout.split("$ llmctl backend list")[1].splitlines()
    rows = [line.split() for line in listed if line[:7] in ("ollama-", "vllm-a ")]
    assert len(rows) == 3, done.stdout
    assert all(row[2] == "Ready" for row in rows), done.stdout
    assert "node-a" not in done.stdout
