"""`diagnostic_msgs/DiagnosticArray` building for the nodes."""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from mvp_ros.tick.stats import RollingTimes, Throttle  # noqa: F401 - the nodes' statistics, with their diagnostics


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
