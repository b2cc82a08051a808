"""The fake's prompt cache: enough of the API's for ``cache_control`` to show in the usage.

A request's cached prefix is everything up to and including its last block marked
``cache_control`` (the API's order: tools, the output schema, system, messages). The first request
with a prefix writes it (``cache_creation_input_tokens``); requests with the same prefix and model
within ``ttl_s`` of its last use read it (``cache_read_input_tokens``); ``input_tokens`` keeps only
the rest of the prompt. A prefix shorter than the model's minimum is not cached, as the API
silently does. Tokens are estimated as everywhere in the fake: characters / 4.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL_S = 300.0  # "ephemeral": five minutes, refreshed by each read
MIN_CACHEABLE_TOKENS = 1024
MIN_CACHEABLE_TOKENS_HAIKU = 2048


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """How a request's input tokens split between the cache and the rest of the prompt."""

    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class PromptCache:
    """Cached prefixes by model and text, each with the time it was last used."""

    def __init__(
        self, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}

    def usage(self, body: Mapping[str, Any], *, input_tokens: int) -> CacheUsage:
        """The usage of a request whose whole prompt is ``input_tokens`` long."""
        prefix = cached_prefix(body)
        if prefix is None:
            return CacheUsage(input_tokens=input_tokens)
        prefix_tokens = min(input_tokens, len(prefix) // 4)
        model = str(body.get("model", ""))
        if prefix_tokens < minimum_tokens(model):
            return CacheUsage(input_tokens=input_tokens)
        key = hashlib.sha256(f"{model}\x00{prefix}".encode()).hexdigest()
        now = self._clock()
        with self._lock:
            last_used = self._last_used.get(key)
            self._last_used[key] = now
        rest = max(1, input_tokens - prefix_tokens)
        if last_used is not None and now - last_used <= self.ttl_s:
            return CacheUsage(input_tokens=rest, cache_read_input_tokens=prefix_tokens)
        return CacheUsage(input_tokens=rest, cache_creation_input_tokens=prefix_tokens)

    def clear(self) -> None:
        with self._lock:
            self._last_used.clear()


def minimum_tokens(model: str) -> int:
    return MIN_CACHEABLE_TOKENS_HAIKU if "haiku" in model else MIN_CACHEABLE_TOKENS


def cached_prefix(body: Mapping[str, Any]) -> str | None:
    """The text of the prefix up to the last ``cache_control`` block, or None when none is."""
    parts: list[str] = []
    prefix: str | None = None
    for text, marked in _blocks(body):
        parts.append(text)
        if marked:
            prefix = "\n".join(parts)
    return prefix


def _blocks(body: Mapping[str, Any]) -> Iterator[tuple[str, bool]]:
    """(text, marked) of every part of the prompt, in the order the API caches them."""
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping):
            yield json.dumps(tool), "cache_control" in tool
    if body.get("output_config"):
        yield json.dumps(body["output_config"]), False
    yield from _content_blocks(body.get("system"))
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            yield from _content_blocks(message.get("content"))


def _content_blocks(content: object) -> Iterator[tuple[str, bool]]:
    if isinstance(content, str):
        yield content, False
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping):
                text = block.get("text")
                yield (
                    (text if isinstance(text, str) else json.dumps(block)),
                    bool(block.get("cache_control")),
                )
