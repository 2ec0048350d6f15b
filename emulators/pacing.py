"""How fast an emulated node generates: time to first token and the delay between tokens.

Each Ollama and vLLM node holds one `Pace`, set at start (`ttft=`, `token_delay=` of `build`,
`llmctl emulate --ttft --token-delay`) and at run time through `POST /_emulator/state`
(`{"ttft": 0.05, "token_delay": 0.01}`). Inference handlers wait through it: a streamed reply
waits `ttft` before its first token and `token_delay` between tokens; a whole reply waits for
all of them before answering. Both 0 (the default) answer at once. Pure timing; no HTTP here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")
FIELDS = ("ttft", "token_delay")


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


@dataclasses.dataclass
class Pace:
    """Seconds to the first token (`ttft`) and between tokens (`token_delay`)."""

    ttft: float = 0.0
    token_delay: float = 0.0

    def __post_init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, _seconds(name, getattr(self, name)))

    async def whole(self, tokens: int) -> None:
        """Wait as long as generating `tokens` tokens takes, for a reply sent in one piece."""
        delay = self.ttft + self.token_delay * max(0, tokens - 1)
        if delay > 0:
            await asyncio.sleep(delay)

    async def tokens(self, items: Iterable[T]) -> AsyncIterator[T]:
        """Yield `items` as they are generated: the first `ttft` after the call, each next one
        `token_delay` after the one before, on the generator's own clock, as a GPU makes them.
        A late wake-up (a busy machine) or a reader that falls behind gets the tokens made
        meanwhile at once; it does not push back every token after it, as sleeping
        `token_delay` after each yield did (ten tokens, ten chances to drift)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        for position, item in enumerate(items):
            due += self.ttft if position == 0 else self.token_delay
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield item

    def patch(self, fields: MutableMapping[str, Any]) -> None:
        """Take `ttft` and `token_delay` out of an admin patch. Raises ValueError when invalid."""
        for name in FIELDS:
            if name in fields:
                setattr(self, name, _seconds(name, fields.pop(name)))

    def to_dict(self) -> dict[str, float]:
        """The knobs, for `GET /_emulator/state`."""
        return dataclasses.asdict(self)
