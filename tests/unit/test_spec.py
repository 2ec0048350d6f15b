"""Spec validation: each bad value is refused with the field and what would be valid."""

from __future__ import annotations

import pytest

from runtimestate import credentials
from runtimestate.desired import spec


def _backend(**changes: object) -> spec.BackendSpec:
    values: dict[str, object] = {"name": "gpu-1", "type": "ollama", "url": "http://10.0.0.5:11434"}
    values.update(changes)
    return spec.make_backend(**values)  # type: ignore[arg-type]


def test_a_valid_backend_is_normalised() -> None:
    backend = _backend(type="OLLAMA", url="http://10.0.0.5:11434/", labels={"zone": "a"})
    assert backend.type is spec.BackendType.OLLAMA
    assert backend.url == "http://10.0.0.5:11434"
    assert backend.prune is spec.PrunePolicy.MANAGED
    assert backend.max_pulls == 1


def test_a_url_with_a_path_prefix_is_kept() -> None:
    assert _backend(url="http://127.0.0.1:9000/nodes/17/").url == "http://127.0.0.1:9000/nodes/17"


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"name": "GPU_1"}, "name", "DNS label"),
        ({"type": "llamacpp"}, "type", "ollama|vllm|openai|gemini"),
        ({"url": "ftp://x"}, "url", "http or https"),
        ({"url": "10.0.0.5:11434"}, "url", "http or https"),
        ({"url": "http://user:pw@host"}, "url", "api-key-env"),
        ({"url": "http://host:notaport"}, "url", "invalid port"),
        ({"prune": "some"}, "prune", "none|managed|all"),
        ({"max_pulls": 0}, "maxPulls", "1 to 64"),
        ({"labels": {"bad key": "x"}}, "labels", "label key"),
        ({"labels": {"zone": "not valid"}}, "labels", "label value"),
    ],
)
def test_invalid_backend_values_name_the_field_and_the_fix(
    changes: dict[str, object], field: str, hint: str
) -> None:
    with pytest.raises(spec.SpecError, match=hint) as info:
        _backend(**changes)
    assert info.value.field == field


def test_a_password_in_a_url_is_not_echoed_back() -> None:
    with pytest.raises(spec.SpecError) as info:
        _backend(url="http://user:hunter2@host")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://host/?key=hunter2",
        "http://host/#hunter2",
        "ftp://user:hunter2@host",
        "http://:hunter2@h",
    ],
)
def test_a_secret_in_a_url_query_fragment_or_userinfo_is_not_echoed_back(url: str) -> None:
    with pytest.raises(spec.SpecError) as info:
        _backend(url=url)
    assert info.value.field == "url"
    assert "hunter2" not in str(info.value)


def test_model_capabilities_are_validated_and_sorted() -> None:
    model = spec.validate_model(
        spec.ModelSpec("llama3", 8192, spec.capabilities(["stream", "chat"]))
    )
    assert model.capabilities == (spec.Capability.CHAT, spec.Capability.STREAM)
    with pytest.raises(spec.SpecError, match=r"chat\|embed\|prompt\|stream"):
        spec.capabilities(["vision"])
    with pytest.raises(spec.SpecError, match="contextLength"):
        spec.validate_model(spec.ModelSpec("llama3", 0))


def test_model_and_pool_labels_are_validated_and_sorted() -> None:
    model = spec.validate_model(spec.ModelSpec("llama3", labels={"tier": "big", "a": "1"}))
    assert list(model.labels.items()) == [("a", "1"), ("tier", "big")]
    pool = spec.validate_pool(spec.PoolSpec("chat", labels={"zone": "eu", "team": "ml"}))
    assert list(pool.labels) == ["team", "zone"]
    with pytest.raises(spec.SpecError, match="labels: key 'bad key' is not a valid label key"):
        spec.validate_model(spec.ModelSpec("llama3", labels={"bad key": "x"}))
    with pytest.raises(spec.SpecError, match="labels: value 'a b' of 'zone'"):
        spec.validate_pool(spec.PoolSpec("chat", labels={"zone": "a b"}))


def test_credentials_describe_themselves_without_the_key() -> None:
    stored = credentials.encrypt("sk-very-secret", "the-secret-key")
    assert stored.describe() == "encrypted"
    assert "sk-very-secret" not in repr(stored)
    assert stored.ciphertext is not None
    assert "sk-very-secret" not in stored.ciphertext
    secret = credentials.resolve(stored, {"LLMCTL_SECRET_KEY": "the-secret-key"})
    assert secret is not None
    assert secret.reveal() == "sk-very-secret"
    assert "sk-very-secret" not in f"{secret} {secret!r}"


def test_a_stored_key_needs_the_secret_key_it_was_stored_with() -> None:
    stored = credentials.encrypt("sk-1", "right")
    with pytest.raises(credentials.CredentialError, match="cannot be decrypted"):
        credentials.resolve(stored, {"LLMCTL_SECRET_KEY": "wrong"})
    with pytest.raises(credentials.CredentialError, match="LLMCTL_SECRET_KEY is not set"):
        credentials.resolve(stored, {})


def test_env_credentials_read_the_variable_at_use() -> None:
    ref = credentials.Credentials(credentials.CredentialKind.ENV, env_var="OPENAI_API_KEY")
    assert ref.describe() == "env:OPENAI_API_KEY"
    secret = credentials.resolve(ref, {"OPENAI_API_KEY": "sk-2"})
    assert secret is not None
    assert secret.reveal() == "sk-2"
    with pytest.raises(credentials.CredentialError, match="OPENAI_API_KEY is not set"):
        credentials.resolve(ref, {})


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8700", "http://10.0.0.5:8700/", "http://10.0.0.5:8700/v1/"]
)
def test_a_node_backend_url_is_stored_as_the_agents_root(url: str) -> None:
    backend = _backend(type="node", url=url)
    assert backend.type is spec.BackendType.NODE
    assert backend.url == "http://10.0.0.5:8700"
