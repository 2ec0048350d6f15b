"""Declarative files are validated whole: every problem is reported, with its document."""

from __future__ import annotations

import pytest

from runtimestate import manifest, spec

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
    assert backend.credentials == spec.Credentials(
        spec.CredentialKind.ENV, env_var="OPENAI_API_KEY"
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
            "document 1 (Backend a): url: Field required",
        ),
        (
            "apiVersion: llmctl/v1\nkind: Backend\nmetadata: {name: a}\n"
            "spec: {type: ollama, url: 'http://x', colour: red}\n",
            "colour: Extra inputs are not permitted",
        ),
        (
            "apiVersion: llmctl/v1\nkind: Model\nmetadata: {name: 'bad name'}\n",
            "document 1 (Model bad name): name:",
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
    with pytest.raises(manifest.ManifestError, match="declared more than once"):
        manifest.parse(text)
