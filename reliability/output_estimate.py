"""How many output tokens to reserve for a request: a high percentile of what recent replies
of the same kind really used.

The API charges a request's ``max_tokens`` against the output-token limit when it starts and
gives back the unused part when it ends; the rate budget reserves output tokens for the same
reason. Reserving ``max_tokens`` would spend the limit on tokens never produced, a fixed
guess is wrong for most prompts; the tokens recent replies used are the best guess. Until a
kind has ``min_samples`` replies the fixed fallback is used. Per process: a restart starts
from the fallback again, and a few replies later uses the percentile again.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Hashable

DEFAULT_PERCENTILE = 0.95
DEFAULT_MIN_SAMPLES = 10
DEFAULT_MAX_SAMPLES = 200


class OutputTokenEstimate:
    """A rolling window of the output tokens replies of one kind used."""

    def __init__(
        self,
        *,
        fallback: int,
        percentile: float = DEFAULT_PERCENTILE,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        max_samples: int = DEFAULT_MAX_SAMPLES,
    ) -> None:
        if not 0 < percentile <= 1:
            raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
        if not 1 <= min_samples <= max_samples:
            raise ValueError("min_samples must be at least 1 and at most max_samples")
        self.fallback = fallback
        self.percentile = percentile
        self.min_samples = min_samples
        self._samples: deque[int] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def observe(self, output_tokens: int) -> None:
        """A reply used ``output_tokens``."""
        with self._lock:
            self._samples.append(max(0, int(output_tokens)))

    @property
    def samples(self) -> int:
        return len(self._samples)

    def estimate(self, *, max_tokens: int) -> int:
        """The percentile of the recent replies (nearest rank), or the fallback while there are
        too few; never more than ``max_tokens`` (no reply can use more), never less than 1."""
        with self._lock:
            samples = sorted(self._samples)
        if len(samples) < self.min_samples:
            value = self.fallback
        else:
            value = samples[max(0, math.ceil(self.percentile * len(samples)) - 1)]
        return max(1, min(max_tokens, value))


_estimates: dict[Hashable, OutputTokenEstimate] = {}
_estimates_lock = threading.Lock()


def output_estimate_for(kind: Hashable, *, fallback: int) -> OutputTokenEstimate:
    """The process's estimate for replies of ``kind`` (a model, a prompt version, a purpose)."""
    with _estimates_lock:
        estimate = _estimates.get(kind)
        if estimate is None:
            estimate = _estimates[kind] = OutputTokenEstimate(fallback=fallback)
        return estimate


def forget_estimates() -> None:
    """Drop every kind's samples (tests start from the fallback)."""
    with _estimates_lock:
        _estimates.clear()
