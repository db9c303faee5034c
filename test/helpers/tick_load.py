"""Load generator for measuring the policy node's control tick over real DDS.

Publishes every observation topic of a contract (JointState with its joints, PoseStamped, the
Float64MultiArray sizes, Images of the contract's size) at --rate Hz with current stamps for
--duration seconds, then prints the policy node's diagnostics (tick latency p50/p99, missed and
stale ticks, inference time) and the machine's load average as JSON.

    mvp policy-node --checkpoint CKPT --contract CONTRACT --ros-args -p control_rate_hz:=100.0 &
    python test/helpers/tick_load.py --contract CONTRACT --rate 200 --duration 60
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from mvp_ros.data.contract import ImageObservation, JointStateObservation, PoseObservation, load_contract
from mvp_ros.ros.diagnostics import values_of

STATUS = "mvp_policy: control"


def messages_for(contract, stamp) -> dict[str, object]:
    """topic -> one message carrying every key the contract reads from that topic."""
    messages: dict[str, object] = {}
    for spec in contract.observations.values():
        if isinstance(spec, JointStateObservation):
            msg = messages.setdefault(spec.topic, JointState())
            msg.name = [*msg.name, *spec.joints]
            msg.position = [*msg.position, *np.linspace(-0.5, 0.5, len(spec.joints))]
        elif isinstance(spec, PoseObservation):
            msg = messages.setdefault(spec.topic, PoseStamped())
            msg.pose.position.z, msg.pose.orientation.w = 1.0, 1.0
        elif isinstance(spec, ImageObservation):
            height, width, _ = spec.shape
            msg = Image(height=height, width=width, encoding="rgb8", step=3 * width)
            msg.data = np.random.default_rng(0).integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
            messages[spec.topic] = msg
        else:
            messages[spec.topic] = Float64MultiArray(data=[0.1] * spec.shape[0])
            continue
        msg.header.stamp = stamp
    return messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contract", required=True)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second per topic")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    args = parser.parse_args()

    contract = load_contract(args.contract)
    rclpy.init()
    node = rclpy.create_node("tick_load")
    latest: dict[str, dict[str, str]] = {}
    received = [0]

    def keep(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == STATUS:
                latest["values"] = values_of(status)
                received[0] += 1

    node.create_subscription(DiagnosticArray, "/diagnostics", keep, 10)
    example = messages_for(contract, node.get_clock().now().to_msg())
    publishers = {topic: node.create_publisher(type(msg), topic, 10) for topic, msg in example.items()}
    while not latest.get("values", {}).get("state") == "active":
        rclpy.spin_once(node, timeout_sec=0.1)
    # The window runs from the first diagnostics message after a second of load to the first one
    # after --duration more seconds; the load runs throughout.
    period = 1.0 / args.rate
    started = next_at = time.perf_counter()
    window: list[tuple[float, dict[str, str]]] = []
    while len(window) < 2:
        for topic, msg in messages_for(contract, node.get_clock().now().to_msg()).items():
            publishers[topic].publish(msg)
        next_at += period
        while True:  # at least one spin per message set, even when behind schedule
            seen = received[0]
            rclpy.spin_once(node, timeout_sec=max(0.0, next_at - time.perf_counter()))
            elapsed = time.perf_counter() - started
            if received[0] > seen and (elapsed > 1.0 and not window or window and elapsed - window[0][0] > args.duration):
                window.append((elapsed, latest["values"]))
            if time.perf_counter() >= next_at:
                break
    (start_s, before), (end_s, after) = window
    keys = ("ticks", "commands", "holds", "stale_ticks", "missed_ticks", "overruns")
    result = {key: int(after[key]) - int(before[key]) for key in keys}
    result |= {key: float(after[key]) for key in after if key.endswith(("_p50", "_p99"))}
    result |= {"publish_rate_hz": args.rate, "window_s": round(end_s - start_s, 2), "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(result, indent=2))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
