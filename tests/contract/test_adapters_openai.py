"""The OpenAI-compatible adapter against the vLLM emulator's `/v1/models` over loopback HTTP
(vLLM is an OpenAI-compatible server), for every fault kind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from emulators import faults
from emulators import vllm as emulator
from runtimestate import errors
from runtimestate.backends import base, openai

TIMEOUTS = base.Timeouts(connect=1.0, read=0.3, stall=0.3, total=0.8)  # connect: busy CI
SLACK = 0.3
Kind = faults.FaultKind


@pytest.fixture
async def emu() -> AsyncIterator[emulator.Emulator]:
    async with emulator.running(
        served_model_names=["chat-model"], max_model_len=8192, api_key="sk-local", nodes=2
    ) as emu:
        yield emu


@pytest.fixture
async def cloud(emu: emulator.Emulator) -> AsyncIterator[openai.OpenAIBackend]:
    async with openai.OpenAIBackend(
        emu.node_url(1) + "/v1",
        name="cloud",
        api_key="sk-local",
        timeouts=TIMEOUTS,
        max_body_bytes=64 * 1024,
    ) as adapter:
        yield adapter


async def test_lists_models_with_the_bearer_key_under_a_path_prefix(
    cloud: openai.OpenAIBackend,
) -> None:
    (model,) = (await cloud.observe()).models
    assert (model.name, model.context_length, model.loaded) == ("chat-model", 8192, False)
    assert model.can_chat


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (faults.Fault(Kind.LATENCY, latency=2.0), errors.BackendTimedOut),
        (faults.Fault(Kind.HANG), errors.BackendTimedOut),
        (faults.Fault(Kind.HTTP_500), errors.ServerError),
        (faults.Fault(Kind.RESET), errors.BackendUnavailable),
        (faults.Fault(Kind.MALFORMED), errors.ProtocolError),
        (faults.Fault(Kind.OVERSIZED), errors.ProtocolError),
    ],
)
async def test_every_fault_maps_to_its_error_within_the_timeout(
    emu: emulator.Emulator,
    cloud: openai.OpenAIBackend,
    fault: faults.Fault,
    expected: type[Exception],
) -> None:
    emu.set_fault(fault, endpoint="/v1/models", node=1)
    started = time.monotonic()
    with pytest.raises(errors.LlmctlError) as caught:
        await cloud.observe()
    assert type(caught.value) is expected
    assert time.monotonic() - started < TIMEOUTS.total + SLACK


async def test_a_wrong_key_is_unauthorized_and_not_echoed(emu: emulator.Emulator) -> None:
    async with openai.OpenAIBackend(
        emu.node_url(1) + "/v1", api_key="sk-wrong", timeouts=TIMEOUTS
    ) as adapter:
        with pytest.raises(errors.Unauthorized) as caught:
            await adapter.observe()
    assert "sk-wrong" not in str(caught.value)
