"""Reading the gateway's tracing setting (``--traces`` / ``OTEL_TRACES_EXPORTER``)."""

from __future__ import annotations

import pytest

from controller import gatewayobservers


@pytest.mark.parametrize(
    ("option", "exporters"),
    [
        ("none", ()),
        ("", ()),
        ("console", ("console",)),
        ("OTLP, console,otlp", ("otlp", "console")),
        ("none,console", ("console",)),
    ],
)
def test_the_trace_setting_names_its_exporters_once(
    option: str, exporters: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    assert gatewayobservers.traces(option) == exporters


def test_the_sdks_own_off_switch_turns_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert gatewayobservers.traces("otlp") == ()


def test_otlp_over_grpc_for_traces_alone_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    with pytest.raises(gatewayobservers.BadTraces) as refused:
        gatewayobservers.traces("otlp")
    assert refused.value.code == 1
    assert gatewayobservers.traces("console") == ("console",)  # the console needs no protocol
