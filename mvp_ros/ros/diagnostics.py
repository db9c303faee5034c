"""Rolling timing statistics and `diagnostic_msgs/DiagnosticArray` building for the nodes."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

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

    def __init__(self, period_s: float = 1.0) -> None:
        self.period_s = period_s
        self._last: dict[Hashable, float] = {}

    def ready(self, key: Hashable) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.period_s:
            return False
        self._last[key] = now
        return True


def status(name: str, level: bytes, message: str, hardware_id: str, values: dict[str, Any]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=_text(value)) for key, value in values.items()],
    )


def diagnostic_array(stamp: Any, *statuses: DiagnosticStatus) -> DiagnosticArray:
    array = DiagnosticArray(status=list(statuses))
    array.header.stamp = stamp
    return array


def values_of(status_msg: DiagnosticStatus) -> dict[str, str]:
    """A DiagnosticStatus's key/values as a dict (for readers of the diagnostics)."""
    return {pair.key: pair.value for pair in status_msg.values}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
