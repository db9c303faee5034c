"""QoS profiles the policy node and the simulation bridge share.

Observations are read with the sensor-data profile (best effort, keep the last 5): a late sample
is worth less than the next one. Everything the bridge publishes is reliable, which matches both
best-effort readers (the policy node) and reliable ones (`mvp record`, `ros2 topic echo`).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR_QOS = qos_profile_sensor_data
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Episode events (start, result): a subscriber that joins late still gets the recent ones.
EVENT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
