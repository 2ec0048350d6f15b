"""Which models a key may use (`gateway.permissions`): its models, its pools' models and adapters."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway import keys, permissions
from runtimestate import desired
from runtimestate.desired import spec

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
META = spec.Meta(1, 1, T0, T0)


def _state() -> desired.DesiredState:
    chat = spec.PoolSpec("chat", models=("llama3", "qwen2:0.5b"), adapters=("sql-lora",))
    code = spec.PoolSpec("code", models=("Qwen/Qwen2.5-Coder-7B",))
    return desired.DesiredState((), (), (spec.Pool(chat, META), spec.Pool(code, META)))


CASES = [
    # (models, pools, requested, allowed)
    ((), (), "anything-at-all", True),
    (("llama3",), (), "llama3", True),
    (("llama3",), (), "llama3:latest", True),
    (("llama3",), (), "library/llama3:latest", True),
    (("llama3",), (), "llama3:70b", False),
    (("llama3",), (), "qwen2:0.5b", False),
    ((), ("chat",), "qwen2:0.5b", True),
    ((), ("chat",), "llama3:latest", True),
    ((), ("chat",), "sql-lora", True),
    ((), ("chat",), "Qwen/Qwen2.5-Coder-7B", False),
    ((), ("code",), "Qwen/Qwen2.5-Coder-7B", True),
    ((), ("gone",), "llama3", False),
    (("gpt-4o",), ("code",), "gpt-4o", True),
    (("gpt-4o",), ("code",), "llama3", False),
]


@pytest.mark.parametrize(("models", "pools", "requested", "allowed"), CASES)
def test_a_key_may_use_its_models_and_its_pools_models_and_adapters_only(
    models: tuple[str, ...], pools: tuple[str, ...], requested: str, allowed: bool
) -> None:
    key = keys.KeySpec("alice", models, pools)
    assert permissions.allows(key, requested, _state()) is allowed
