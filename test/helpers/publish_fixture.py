"""Publishes known test messages over real DDS, for the `mvp record` tests (run as its own process);
also a load generator for measuring the recorder (--rate, --image-size).

Header stamps are the publisher's clock at publishing. Message i on each topic carries its index, so
a test can check every recorded message against what was published:
  /joint_states       sensor_msgs/JointState, reliable; frame_id str(i); joint names in an order
                      that rotates every message, positions joint_positions(i) by name
  /camera/image_raw   sensor_msgs/Image rgb8 IMAGE_WIDTH x IMAGE_HEIGHT, best effort (sensor data
                      QoS); frame_id str(i), pixels image_bytes(i)
  /policy/command     std_msgs/Float64MultiArray, reliable; data = command(i)
  /fixture/static     std_msgs/String STATIC_TEXT, transient local, published once at start-up

    python publish_fixture.py [--count N] [--rate HZ] [--image-size W H]

Waits until every topic has a subscriber, prints "publishing", publishes N messages per topic
(0: until stopped), prints "done N" and keeps running (so reliable resends can finish) until
SIGINT or SIGTERM.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np

JOINT_NAMES = ["j1", "j2", "j3"]
IMAGE_WIDTH, IMAGE_HEIGHT = 8, 6
STATIC_TEXT = "static fixture"


def joint_names(i: int) -> list[str]:
    shift = i % len(JOINT_NAMES)
    return JOINT_NAMES[shift:] + JOINT_NAMES[:shift]


def joint_positions(i: int) -> dict[str, float]:
    return {name: i + 0.25 * k for k, name in enumerate(JOINT_NAMES)}


def image_bytes(i: int, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> bytes:
    return ((np.arange(width * height * 3) + i) % 256).astype(np.uint8).tobytes()


def command(i: int) -> list[float]:
    return [float(i), -0.5 * i]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="messages per topic; 0 publishes until stopped")
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second per topic")
    parser.add_argument("--image-size", type=int, nargs=2, default=[IMAGE_WIDTH, IMAGE_HEIGHT], metavar=("W", "H"))
    args = parser.parse_args()
    width, height = args.image_size

    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, Header, String

    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("publish_fixture")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    joints_pub = node.create_publisher(JointState, "/joint_states", reliable)
    image_pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    command_pub = node.create_publisher(Float64MultiArray, "/policy/command", reliable)
    static_pub = node.create_publisher(String, "/fixture/static", latched)
    static_pub.publish(String(data=STATIC_TEXT))

    streaming = [joints_pub, image_pub, command_pub]
    while not stopping and any(p.get_subscription_count() == 0 for p in streaming):
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.3)  # the subscriber side of a best-effort match may lag the publisher side
    print("publishing", flush=True)

    i = 0
    next_time = time.monotonic()
    while not stopping and (args.count == 0 or i < args.count):
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id=str(i))
        joints = JointState(header=header, name=joint_names(i))
        joints.position = [joint_positions(i)[name] for name in joints.name]
        image = Image(header=header, height=height, width=width, encoding="rgb8", step=width * 3)
        image.data = image_bytes(i, width, height)
        joints_pub.publish(joints)
        image_pub.publish(image)
        command_pub.publish(Float64MultiArray(data=command(i)))
        i += 1
        next_time += 1.0 / args.rate
        time.sleep(max(0.0, next_time - time.monotonic()))
    print(f"done {i}", flush=True)
    while not stopping:
        time.sleep(0.05)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
