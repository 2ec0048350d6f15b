"""The official openai client, unchanged, through the gateway to emulated vLLM nodes."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators import ollama
from runtimestate import resolver
from tests.integration import gateway_harness
from tests.integration.gateway_harness import GENERATIVE, declared
from tests.unit.test_resolver import backend, fleet, model

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Why is the sky blue?"}]


async def test_a_chat_completion_comes_back_from_a_vllm_node_through_the_gateway() -> None:
    async with gateway_harness.running() as h:
        reply = await h.client.chat.completions.create(model="qwen", messages=MESSAGES)
        assert reply.model == "qwen"
        assert reply.choices[0].message.content
        assert reply.usage is not None
        assert reply.usage.completion_tokens > 0
        served = sum(n.counters["success_stop"] for n in h.emulator.nodes)
        assert served == 1


async def test_a_streamed_chat_arrives_chunk_by_chunk_with_usage_when_asked() -> None:
    async with gateway_harness.running() as h:
        stream = await h.client.chat.completions.create(
            model="qwen",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len([c for c in chunks if c.choices]) > 3
        assert text.strip()
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens > 0


async def test_embeddings_come_back_as_floats_and_in_the_clients_default_base64() -> None:
    async with gateway_harness.running(runner="pooling", embedding_size=8) as h:
        reply = await h.client.embeddings.create(
            model="embedder", input=["a", "b"], encoding_format="float"
        )
        assert [len(d.embedding) for d in reply.data] == [8, 8]
        assert reply.model == "embedder"
        default = await h.client.embeddings.create(model="embedder", input=["a", "b"])
        for packed, floats in zip(default.data, reply.data, strict=True):  # float32 on the wire
            assert packed.embedding == pytest.approx(floats.embedding, rel=1e-6)


async def test_the_model_list_names_what_the_fleet_serves_once() -> None:
    async with gateway_harness.running(nodes=2) as h:
        listed = [m.id async for m in h.client.models.list()]
        assert listed == ["qwen"]


async def test_a_completion_comes_back_from_a_vllm_node_through_the_gateway() -> None:
    async with gateway_harness.running() as h:
        reply = await h.client.completions.create(model="qwen", prompt="Once upon a time")
        assert reply.choices[0].text
        assert reply.usage is not None
        assert reply.usage.prompt_tokens > 0


async def test_a_chat_is_routed_to_an_ollama_node_through_its_own_v1() -> None:
    async with ollama.running(nodes=1, installed=["qwen2:0.5b"]) as emu:
        states = [
            backend(
                "ollama-0", model("qwen2:0.5b", 8192, caps=GENERATIVE), base_url=emu.node_url(0)
            )
        ]
        r = resolver.Resolver.from_snapshot(fleet(*states), desired=declared(states, "ollama"))
        async with gateway_harness.serving(r) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            reply = await client.chat.completions.create(model="qwen2:0.5b", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="qwen2:0.5b", messages=MESSAGES, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            await client.close()
        assert reply.choices[0].message.content
        assert text


async def test_a_short_ollama_name_is_sent_as_the_name_the_node_serves() -> None:
    async with ollama.running(nodes=1, installed=["llama3:latest"]) as emu:
        states = [
            backend(
                "ollama-0", model("llama3:latest", 8192, caps=GENERATIVE), base_url=emu.node_url(0)
            )
        ]
        r = resolver.Resolver.from_snapshot(fleet(*states), desired=declared(states, "ollama"))
        async with gateway_harness.serving(r) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
            reply = await client.chat.completions.create(model="llama3", messages=MESSAGES)
            await client.close()
        assert reply.model == "llama3:latest"  # the node answered for the name it serves
