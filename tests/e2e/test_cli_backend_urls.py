"""Backend URLs as users copy them: ``/v1`` or not, declared by the CLI or by ``apply``, a vLLM
node is observed; the stored form is shown; a wrong URL's 404 names the URL requested."""

from __future__ import annotations

import pathlib

import sqlalchemy as sa

from emulators import vllm
from runtimestate import database
from tests.e2e.conftest import Cli

FILE = """
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: vllm-0}}
spec: {{type: vllm, url: "{url}/v1/"}}
---
apiVersion: llmctl/v1
kind: Backend
metadata: {{name: cloud}}
spec: {{type: openai, url: "{url}"}}
"""


def _phases(llmctl: Cli) -> dict[str, tuple[str, str | None]]:
    result = llmctl("reconcile", "--once", "-o", "json")
    assert result.code == 0, result.out + result.err
    return {b["name"]: (b["phase"], b["error"]) for b in result.json()["backends"]}


def test_a_vllm_url_ending_in_v1_added_by_the_cli_is_stored_without_it_and_observed(
    llmctl: Cli,
) -> None:
    with vllm.in_thread(served_model_names=["my-model"]) as emu:
        added = llmctl("backend", "add", "vllm-0", "--type", "vllm", "--url", f"{emu.url}/v1")
        assert added.code == 0, added.err
        assert llmctl("backend", "get", "vllm-0", "-o", "json").json()["url"] == emu.url
        assert _phases(llmctl) == {"vllm-0": ("Ready", None)}
        assert emu.nodes[0].requests["GET /v1/models"] == 1
        moved = llmctl("backend", "update", "vllm-0", "--url", f"{emu.url}/v1/")
        assert (moved.code, moved.out.strip()) == (0, "backend/vllm-0 unchanged")


def test_urls_with_and_without_v1_in_a_file_apply_observe_and_reapply_with_no_change(
    llmctl: Cli, tmp_path: pathlib.Path
) -> None:
    with vllm.in_thread(served_model_names=["my-model"]) as emu:
        path = tmp_path / "fleet.yaml"
        path.write_text(FILE.format(url=emu.url))
        first = llmctl("apply", "-f", str(path))
        assert first.code == 0, first.err
        listed = {b["name"]: b["url"] for b in llmctl("backend", "list", "-o", "json").json()}
        assert listed == {"vllm-0": emu.url, "cloud": f"{emu.url}/v1"}
        again = llmctl("apply", "-f", str(path))
        assert again.code == 0, again.err
        assert "created" not in again.out, again.out
        assert "updated" not in again.out, again.out
        assert llmctl("apply", "-f", str(path), "--dry-run").out.count("unchanged") == 2
        assert _phases(llmctl) == {"vllm-0": ("Ready", None), "cloud": ("Ready", None)}


def test_a_row_stored_with_v1_before_normalisation_is_observed(
    llmctl: Cli, database_url: str
) -> None:
    with vllm.in_thread(served_model_names=["my-model"]) as emu:
        assert llmctl("backend", "add", "vllm-0", "--type", "vllm", "--url", emu.url).code == 0
        engine = database.create_sync_engine(database_url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text("UPDATE backends SET base_url = base_url || '/v1'"))
        finally:
            engine.dispose()
        assert llmctl("backend", "get", "vllm-0", "-o", "json").json()["url"] == f"{emu.url}/v1"
        assert _phases(llmctl) == {"vllm-0": ("Ready", None)}


def test_a_404_from_a_wrong_base_url_names_the_url_requested(llmctl: Cli) -> None:
    with vllm.in_thread(served_model_names=["my-model"]) as emu:
        url = f"{emu.url}/api"
        assert llmctl("backend", "add", "vllm-0", "--type", "vllm", "--url", url).code == 0
        phase, error = _phases(llmctl)["vllm-0"]
        assert phase == "Unreachable"
        assert error is not None
        assert f"404 Not Found from {url}/v1/models" in error, error
        got = llmctl("backend", "get", "vllm-0").out
        assert f"{url}/v1/models" in got
