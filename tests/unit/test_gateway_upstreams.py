"""Where the gateway sends a provider's requests, and that its key shows nowhere but the header."""

from __future__ import annotations

import pytest

from gateway import upstreams
from runtimestate import credentials, resolver
from tests.unit.test_resolver import _desired as desired_cloud
from tests.unit.test_resolver import backend, fleet, model


@pytest.mark.parametrize(
    ("kind", "base_url", "expected"),
    [
        ("vllm", "http://gpu-1:8000", "http://gpu-1:8000/v1"),
        ("vllm", "http://gpu-1:8000/", "http://gpu-1:8000/v1"),
        ("ollama", "http://gpu-2:11434", "http://gpu-2:11434/v1"),
        ("node", "http://gpu-3:8101/v1", "http://gpu-3:8101/v1"),
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("gemini", "https://generativelanguage.googleapis.com",
         "https://generativelanguage.googleapis.com/v1beta/openai"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta",
         "https://generativelanguage.googleapis.com/v1beta/openai"),
    ],
)  # fmt: skip
def test_each_backend_type_has_its_openai_base(kind: str, base_url: str, expected: str) -> None:
    assert upstreams.openai_base(kind, base_url) == expected


def test_a_clouds_key_goes_into_the_header_and_nowhere_else() -> None:
    key = "sk-0a1b2c3d4e5f6a7b8c9d"
    snap = fleet(
        backend(
            "cloud", model("gpt-4o-mini"), type_="openai", base_url="https://api.example.com/v1"
        )
    )
    creds = credentials.Credentials(credentials.CredentialKind.ENV, env_var="OPENAI_API_KEY")
    r = resolver.Resolver.from_snapshot(
        snap, desired=desired_cloud(creds), environ={"OPENAI_API_KEY": key}
    )
    upstream = upstreams.Upstream.of(r.resolve(resolver.Request(models=("gpt-4o-mini",))).provider)
    assert upstream.headers["Authorization"] == f"Bearer {key}"
    assert key not in repr(upstream)
    assert upstream.url("chat/completions") == "https://api.example.com/v1/chat/completions"
    echoed = f'{{"error": "bad key {key[:10]}...{key[-9:]}"}}'
    assert key[:10] not in upstream.redact(echoed)
    assert key[-9:] not in upstream.redact(echoed)
