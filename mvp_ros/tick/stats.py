"""Rolling timing statistics and log throttling, on whichever clock the caller gives."""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable

import numpy as np

# Percentiles are over the most recent samples: ~8 minutes of ticks at 20 Hz, 100 s at 100 Hz.
WINDOW = 10_000


class RollingTimes:
    """The last WINDOW durations (milliseconds), for percentiles."""

    def __init__(self, window: int = WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=window)

    def add(self, milliseconds: float) -> None:
        self._values.append(milliseconds)

    def percentile(self, q: float) -> float:
        """NaN before the first value."""
        return float(np.percentile(self._values, q)) if self._values else float("nan")

    def clear(self) -> None:
        self._values.clear()


class Throttle:
    """Lets through at most one event per key per period: one log line per topic and reason per
    second, however many bad messages arrive."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self.clock = clock
        self._last: dict[Hashable, float] = {}

    def ready(self, key: Hashable) -> bool:
        now = self.clock()
        if now - self._last.get(key, -math.inf) < self.period_s:
            return False
        self._last[key] = now
        return True
