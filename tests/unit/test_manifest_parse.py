"""Declarative files are validated whole: every problem is reported, with its document."""

from __future__ import annotations

import datetime as dt

import pytest

from runtimestate import credentials, desired
from runtimestate.desired import manifest, spec

VALID = """
apiVersion: llmctl/v1
kind: Backend
metadata: {name: gpu-1, labels: {zone: a}}
spec: {type: ollama, url: "http://10.0.0.5:11434", prune: managed, maxPulls: 1, credentials: {env: OPENAI_API_KEY}}
---
apiVersion: llmctl/v1
kind: Model
metadata: {name: "llama3.2:1b"}
spec: {contextLength: 8192, capabilities: [chat, stream]}
---
apiVersion: llmctl/v1
kind: Pool
metadata: {name: chat}
spec: {purpose: "interactive chat", backends: [gpu-1], models: ["llama3.2:1b"]}
"""


def test_the_documented_example_parses_into_specs() -> None:
    parsed = manifest.parse(VALID)
    (backend,) = parsed.backends
    assert backend.labels == {"zone": "a"}
    assert backend.credentials == credentials.Credentials(
        credentials.CredentialKind.ENV, env_var="OPENAI_API_KEY"
    )
    (model,) = parsed.models
    assert model.context_length == 8192
    assert parsed.pools[0].backends == ("gpu-1",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [b", "not valid YAML"),
        ("", "no documents"),
        ("- just a list", "document 1"),
        ("apiVersion: v2\nkind: Backend\nmetadata: {name: a}\n", "apiVersion"),
        ("apiVersion: llmctl/v1\nkind: Node\nmetadata: {name: a}\n", "kind"),
        (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: a}\nspec: {type: ollama}\n",
            "the file: document 1 (Backend a): spec.url: is required",
        ),
        (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: a}\n"
            "spec: {type: ollama, url: 'http://x', colour: red}\n",
            "spec.colour: is not a field of a Backend spec (known: type, url, prune, maxPulls,",
        ),
        (
            "apiVersion: llmctl/v1\nkind: Model\nmetadata: {name: 'bad name'}\n",
            "document 1 (Model bad name): metadata.name: model name 'bad name' is empty",
        ),
        (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: a}\n"
            "spec: {type: ollama, url: 'http://x', credentials: {env: A, encrypted: true}}\n",
            "exactly one of",
        ),
    ],
)
def test_bad_files_are_refused_with_the_document_and_field(text: str, message: str) -> None:
    with pytest.raises(manifest.ManifestError) as info:
        manifest.parse(text)
    assert message in str(info.value)


def test_every_bad_document_is_reported_not_only_the_first() -> None:
    text = VALID + "---\napiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: BAD}\n"
    text += "spec: {type: ollama, url: 'http://x'}\n---\napiVersion: llmctl/v1\nkind: Model\n"
    text += "metadata: {name: 'x y'}\n"
    with pytest.raises(manifest.ManifestError) as info:
        manifest.parse(text)
    assert len(info.value.problems) == 2
    assert "document 4 (Backend BAD)" in info.value.problems[0]
    assert "document 5 (Model x y)" in info.value.problems[1]


def test_the_same_model_under_two_spellings_is_a_duplicate() -> None:
    text = "apiVersion: llmctl/v1\nkind: Model\nmetadata: {name: llama3}\n---\n"
    text += "apiVersion: llmctl/v1\nkind: Model\nmetadata: {name: 'llama3:latest'}\n"
    with pytest.raises(
        manifest.ManifestError, match="documents 1 and 2 both declare Model 'llama3:latest'"
    ):
        manifest.parse(text)


def _doc(kind: str, spec_: str, metadata: str = "{name: a}") -> str:
    return f"apiVersion: llmctl/v1\nkind: {kind}\nmetadata: {metadata}\nspec: {spec_}\n"


BACKEND = "type: ollama, url: 'http://x'"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_doc("Backend", f"{{{BACKEND}, maxPulls: true}}"), "spec.maxPulls: must be a whole number, not true (a boolean)"),
        (_doc("Backend", f"{{{BACKEND}, maxPulls: '2'}}"), "spec.maxPulls: must be a whole number, not '2' (a string)"),
        (_doc("Backend", f"{{{BACKEND}, maxPulls: 2.0}}"), "spec.maxPulls: must be a whole number, not 2.0 (a decimal number)"),
        (_doc("Backend", f"{{{BACKEND}, maxPulls: null}}"), "spec.maxPulls: must be a whole number, not null"),
        (_doc("Model", "{contextLength: true}"), "spec.contextLength: must be a whole number, not true (a boolean)"),
        (_doc("Model", "{contextLength: '8192'}"), "spec.contextLength: must be a whole number, not '8192' (a string)"),
        (_doc("Model", "{contextLength: 8192.0}"), "spec.contextLength: must be a whole number, not 8192.0 (a decimal number)"),
        (_doc("Model", "{capabilities: chat}"), "spec.capabilities: must be a list, not 'chat' (a string)"),
        (_doc("Model", "{capabilities: [chat, true]}"), "spec.capabilities[1]: must be a string, not true (a boolean)"),
        (_doc("Backend", "{type: 1, url: 'http://x'}"), "spec.type: must be a string, not 1 (a whole number)"),
        (_doc("Backend", "{type: ollama, url: [x]}"), "spec.url: must be a string, not a list"),
        (_doc("Backend", f"{{{BACKEND}, prune: false}}"), "spec.prune: must be a string, not false (a boolean)"),
        (_doc("Backend", f"{{{BACKEND}, credentials: {{env: 1}}}}"), "spec.credentials.env: must be a string, not 1 (a whole number)"),
        (_doc("Backend", f"{{{BACKEND}, credentials: {{encrypted: 'true'}}}}"), "spec.credentials.encrypted: must be true or false, not 'true' (a string)"),
        (_doc("Backend", f"{{{BACKEND}}}", "{name: 123}"), "metadata.name: must be a string, not 123 (a whole number)"),
        (_doc("Backend", f"{{{BACKEND}}}", "{name: a, labels: 'zone=a'}"), "metadata.labels: must be a mapping (key: value), not 'zone=a' (a string)"),
        (_doc("Backend", f"{{{BACKEND}}}", "{name: a, labels: {zone: 1}}"), "metadata.labels: value 1 of 'zone' is not a valid label value"),
        (_doc("Model", "{}", "{name: llama3, labels: [a]}"), "metadata.labels: must be a mapping (key: value), not a list"),
        (_doc("Model", "{}", "{name: llama3, labels: {'bad key': a}}"), "metadata.labels: key 'bad key' is not a valid label key"),
        (_doc("Pool", "{}", "{name: p, labels: {tier: 'a b'}}"), "metadata.labels: value 'a b' of 'tier' is not a valid label value"),
        (_doc("Pool", "{purpose: 5}"), "spec.purpose: must be a string, not 5 (a whole number)"),
        (_doc("Pool", "{backends: gpu-1}"), "spec.backends: must be a list, not 'gpu-1' (a string)"),
        (_doc("Pool", "{models: [1.5]}"), "spec.models[0]: must be a string, not 1.5 (a decimal number)"),
        (_doc("Model", "[contextLength, 8192]"), "spec: must be a mapping (key: value), not a list"),
        ("apiVersion: llmctl/v1\nkind: Backend\nmetadata: [a]\n", "metadata: must be a mapping (key: value), not a list"),
    ],
)  # fmt: skip
def test_every_field_has_a_strict_type(text: str, problem: str) -> None:
    with pytest.raises(manifest.ManifestError) as info:
        manifest.parse(text)
    assert any(problem in line for line in info.value.problems), info.value.problems


def test_models_and_pools_read_their_labels_from_metadata_sorted() -> None:
    parsed = manifest.parse(
        _doc("Model", "{}", "{name: llama3, labels: {tier: big, family: llama}}")
        + "---\n"
        + _doc("Pool", "{}", "{name: chat, labels: {zone: eu}}")
    )
    assert list(parsed.models[0].labels.items()) == [("family", "llama"), ("tier", "big")]
    assert parsed.pools[0].labels == {"zone": "eu"}


def test_whole_numbers_and_null_overrides_are_accepted_as_written() -> None:
    parsed = manifest.parse(
        _doc("Backend", f"{{{BACKEND}, maxPulls: 2}}")
        + "---\n"
        + _doc("Model", "{contextLength: 8192, capabilities: null}", "{name: llama3}")
    )
    assert parsed.backends[0].max_pulls == 2
    assert (parsed.models[0].context_length, parsed.models[0].capabilities) == (8192, None)


SEVEN = (
    _doc("Backend", "{type: ollama, url: 'ftp://x', maxPulls: true}", "{name: gpu-1}")  # 1, 2
    + "---\n- a list\n"  # 3
    + "---\n"
    + _doc("Node", "{}")  # 4
    + "---\n"
    + _doc("Model", "{}", "{name: llama3}")
    + "---\n"
    + _doc("Model", "{contextLength: 0}", "{name: 'llama3:latest'}")  # 5, 6
    + "---\n"
    + _doc("Pool", "{purpose: chat, backends: [gpu-1], models: ['bad name']}", "{name: chat}")  # 7
)


def test_a_file_with_seven_problems_lists_all_seven_in_one_format() -> None:
    parsed = manifest.read(SEVEN, "fleet.yaml")
    assert parsed.problems == (
        "fleet.yaml: document 1 (Backend gpu-1): spec.url: 'ftp://x' is not an http or https "
        "URL; give an http:// or https:// URL such as http://10.0.0.5:11434",
        "fleet.yaml: document 1 (Backend gpu-1): spec.maxPulls: must be a whole number, "
        "not true (a boolean)",
        "fleet.yaml: document 2: must be a mapping with apiVersion, kind, metadata and spec, "
        "not a list",
        "fleet.yaml: document 3: kind: must be one of Backend|Model|Pool|Adapter, not 'Node'",
        "fleet.yaml: document 5 (Model llama3:latest): spec.contextLength: 0 must be a positive "
        "whole number of tokens",
        "fleet.yaml: document 6 (Pool chat): spec.models[0]: model name 'bad name' is empty or "
        "contains whitespace",
        "fleet.yaml: documents 4 and 5 both declare Model 'llama3:latest' "
        "(as 'llama3', 'llama3:latest'); declare each once",
    )
    assert not any("instance of" in line for line in parsed.problems)


def test_pool_members_are_checked_with_the_other_problems_against_the_stored_state() -> None:
    text = SEVEN.replace("backends: [gpu-1]", "backends: [gpu-1, gpu-9, stored]")
    parsed = manifest.read(text, manifest.STDIN)
    assert manifest.needs_store(parsed, prune=False)
    meta = spec.Meta(
        1, 1, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    stored = desired.DesiredState(
        (spec.Backend(spec.make_backend("stored", "ollama", "http://s"), meta),), (), ()
    )
    with pytest.raises(manifest.ManifestError) as info:
        manifest.check(parsed, stored, prune=False)
    in_file = manifest.read(SEVEN, "fleet.yaml").problems
    assert info.value.problems[:7] == tuple(p.replace("fleet.yaml", "<stdin>") for p in in_file)
    assert info.value.problems[7:] == (
        "<stdin>: document 6 (Pool chat): spec.backends: backend 'gpu-9' is neither in the "
        "file nor declared",
    )
    assert str(info.value).startswith("<stdin> is not valid, nothing was applied (8 problems):")
