"""Backend URLs: both forms users copy (with and without ``/v1``) are stored in one form."""

from __future__ import annotations

import httpx
import pytest

from runtimestate import backends, errors
from runtimestate.backends import failures, httpapi
from runtimestate.desired import spec


@pytest.mark.parametrize(
    ("type_", "given", "stored"),
    [
        ("vllm", "http://10.0.0.5:8000/v1", "http://10.0.0.5:8000"),
        ("vllm", "http://10.0.0.5:8000/v1/", "http://10.0.0.5:8000"),
        ("vllm", "http://10.0.0.5:8000", "http://10.0.0.5:8000"),
        ("vllm", "http://lb/nodes/7/v1", "http://lb/nodes/7"),
        ("vllm", "http://lb/nodes/7", "http://lb/nodes/7"),
        ("vllm", "http://lb/v1/nodes/7", "http://lb/v1/nodes/7"),
        ("vllm", "http://lb/api/v10", "http://lb/api/v10"),
        ("openai", "http://10.0.0.5:8000", "http://10.0.0.5:8000/v1"),
        ("openai", "http://10.0.0.5:8000/", "http://10.0.0.5:8000/v1"),
        ("openai", "http://10.0.0.5:8000/v1/", "http://10.0.0.5:8000/v1"),
        ("openai", "https://api.groq.com/openai/v1", "https://api.groq.com/openai/v1"),
        (
            "openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
        ),
        ("ollama", "http://10.0.0.5:11434/v1", "http://10.0.0.5:11434/v1"),
        ("ollama", "http://10.0.0.5:11434", "http://10.0.0.5:11434"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta", None),
        ("gemini", "https://generativelanguage.googleapis.com", None),
    ],
)
def test_a_backend_url_is_stored_in_the_form_its_adapter_addresses(
    type_: str, given: str, stored: str | None
) -> None:
    backend = spec.make_backend("gpu-1", type_, given)
    assert backend.url == (stored or given)
    again = spec.validate_backend(backend)
    assert again == backend  # idempotent: re-applying the stored form changes nothing


def test_changing_the_type_renormalises_the_url() -> None:
    vllm = spec.make_backend("gpu-1", "vllm", "http://10.0.0.5:8000/v1")
    as_openai = spec.make_backend("gpu-1", "openai", vllm.url)
    assert as_openai.url == "http://10.0.0.5:8000/v1"


URLS = [
    "http://10.0.0.5:11434",
    "https://lb.example/nodes/7/",
    " http://10.0.0.5:8000/v1 ",
    "http://h:abc",
    "http://h:99999",
    "http://@h",
    "http://user:pw@h",
    "http://h/?q=1",
    "http://h/#f",
    "ftp://h",
    "http://",
    "not a url",
]


@pytest.mark.parametrize("url", URLS)
def test_the_spec_and_the_adapters_accept_and_refuse_the_same_urls(url: str) -> None:
    try:
        declared: str | None = spec.base_url(url)
    except spec.SpecError:
        declared = None
    try:
        built: str | None = httpapi.validate_base_url(url)
    except errors.ConfigurationError:
        built = None
    assert built == declared


@pytest.mark.parametrize("type_", list(spec.BackendType))
@pytest.mark.parametrize("url", ["http://h:abc", "http://h:99999"])
def test_every_adapter_refuses_a_url_with_an_invalid_port_as_a_configuration_error(
    type_: spec.BackendType, url: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match="invalid port"):
        backends.create(type_, url)


def _response(status: int, body: bytes, url: str) -> httpx.Response:
    return httpx.Response(status, content=body, request=httpx.Request("GET", url))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"detail":"Not Found"}', "404 Not Found from http://h:8000/v1/v1/models"),
        (b"404 page not found", "404 page not found from http://h:8000/v1/v1/models"),
        (b"", "404 Not Found from http://h:8000/v1/v1/models"),
    ],
)
def test_a_404_for_a_route_names_the_url_requested(body: bytes, message: str) -> None:
    error = failures.check_status_error(_response(404, body, "http://h:8000/v1/v1/models"), "gpu-1")
    assert isinstance(error, errors.RequestRejected)
    assert error.detail == message


def test_a_404_about_a_model_keeps_the_backends_message() -> None:
    body = b'{"error":{"message":"The model `x` does not exist.","code":404}}'
    url = "http://h:8000/v1/unload_lora_adapter"
    error = failures.check_status_error(_response(404, body, url), "gpu-1", about_model=True)
    assert isinstance(error, errors.ModelNotFound)
    assert error.detail == "The model `x` does not exist."
