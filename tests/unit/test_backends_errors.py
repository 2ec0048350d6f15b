"""The error tree: classification of HTTP statuses, reason codes, and safe messages."""

from __future__ import annotations

import pytest

from runtimestate import errors


@pytest.mark.parametrize(
    ("status", "about_model", "expected"),
    [
        (401, False, errors.Unauthorized),
        (403, True, errors.Unauthorized),
        (404, True, errors.ModelNotFound),
        (404, False, errors.RequestRejected),
        (400, True, errors.RequestRejected),
        (408, False, errors.BackendTimedOut),
        (504, False, errors.BackendTimedOut),
        (429, False, errors.BackendUnavailable),
        (502, False, errors.BackendUnavailable),
        (503, False, errors.BackendUnavailable),
        (500, False, errors.ServerError),
        (501, True, errors.ServerError),
        (302, False, errors.ProtocolError),
    ],
)
def test_from_status_classifies_each_status_into_the_tree(
    status: int, about_model: bool, expected: type[errors.LlmctlError]
) -> None:
    error = errors.from_status(status, "boom", backend="node-1", about_model=about_model)
    assert type(error) is expected
    assert error.status_code == status
    assert error.backend == "node-1"


@pytest.mark.parametrize(
    ("cls", "reason", "retryable"),
    [
        (errors.BackendUnavailable, "unavailable", True),
        (errors.BackendTimedOut, "timeout", True),
        (errors.ServerError, "server_error", True),
        (errors.ProtocolError, "protocol", True),
        (errors.DatabaseUnavailable, "database_unavailable", True),
        (errors.ModelNotFound, "model_not_found", False),
        (errors.InvalidModelName, "invalid_model_name", False),
        (errors.Unauthorized, "unauthorized", False),
        (errors.InsufficientDisk, "insufficient_disk", False),
        (errors.RequestRejected, "rejected", False),
        (errors.ConfigurationError, "configuration", False),
    ],
)
def test_each_error_class_carries_its_reason_code_and_retry_policy(
    cls: type[errors.LlmctlError], reason: str, retryable: bool
) -> None:
    error = cls("x")
    assert error.reason == reason
    assert error.retryable is retryable
    assert isinstance(error, errors.TemporaryError) is retryable


def test_terminal_errors_and_configuration_errors_are_separate_branches() -> None:
    assert issubclass(errors.InsufficientDisk, errors.TerminalError)
    assert not issubclass(errors.ConfigurationError, errors.TerminalError | errors.TemporaryError)


def test_error_text_names_the_backend_and_status_and_is_truncated() -> None:
    error = errors.ServerError(
        "line one\n  line two " + "x" * 1000, backend="gpu-7", status_code=500
    )
    text = str(error)
    assert text.startswith("gpu-7: line one line two ")
    assert text.endswith("(HTTP 500)")
    assert len(error.detail) == 300
    assert "reason='server_error'" in repr(error)
