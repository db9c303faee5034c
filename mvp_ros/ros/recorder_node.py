"""`mvp record`: record an observation contract's topics to a rosbag2 bag, no ROS install needed.

Subscriptions are raw (`raw=True`): the CDR bytes that arrive over DDS go into the bag unchanged
(never `rclpy.serialization.serialize_message` output, which rosbags rejects), and each topic's
message definition and RIHS01 hash come from rosbags' ROS 2 type store, so rosbags and rosbag2
both read the bag. A topic is subscribed once a publisher of it is discovered, with a QoS that
matches its publishers the way `ros2 bag record` chooses one: reliable when every publisher is
reliable, transient-local when every publisher is (so latched topics such as /tf_static arrive).
Messages are stamped with their receive time on the node's clock (sim time under use_sim_time).

    mvp record --contract robot.yaml --out demo_001 [--duration 30] [--storage sqlite3]
    mvp record --out demo_001 --ros-args -p contract:=robot.yaml -p duration:=30.0
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rclpy.topic_endpoint_info import TopicEndpointInfo
from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness
from rosbags.interfaces import QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from mvp_ros.data.contract import ContractError, load_contract
from mvp_ros.ros.message_types import import_message_class
from mvp_ros.ros.node_main import overrides, ros_context
from mvp_ros.ros.parameters import ParameterSpec, declare_parameters

NODE_NAME = "mvp_recorder"
STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# Messages DDS keeps per topic while the executor is busy; a burst beyond it loses the oldest.
SUBSCRIPTION_DEPTH = 100
DISCOVERY_PERIOD_S = 0.1


PARAMETERS: dict[str, ParameterSpec] = {
    "contract": ParameterSpec("", "observation contract YAML; every topic it reads or writes is recorded"),
    "out": ParameterSpec("", "rosbag2 bag directory to create (must not exist)"),
    "storage": ParameterSpec("mcap", "rosbag2 storage plugin", choices=tuple(STORAGE_PLUGINS)),
    "duration": ParameterSpec(0.0, "stop after this many seconds on the node's clock; 0 records until SIGINT/SIGTERM",
                              minimum=0.0),
    "extra_topics": ParameterSpec(Parameter.Type.STRING_ARRAY,
                                  "more topics to record, each 'TOPIC:TYPE' (e.g. '/odom:nav_msgs/msg/Odometry')"),
}


class RecorderError(ValueError):
    """A recording that cannot start: bad parameters, contract, topic or type."""


def parse_extra_topic(text: str) -> tuple[str, str]:
    """`/topic:pkg/msg/Type` -> (topic, type)."""
    topic, _, type_name = text.partition(":")
    if not topic.startswith("/") or type_name.count("/") != 2:
        raise RecorderError(f"extra topic {text!r} is not TOPIC:TYPE, e.g. /odom:nav_msgs/msg/Odometry")
    return topic, type_name


def subscription_qos(publishers: list[TopicEndpointInfo]) -> QoSProfile:
    """A QoS that matches every publisher and keeps their reliability and durability if all share it."""
    profiles = [info.qos_profile for info in publishers]
    all_reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
    all_transient_local = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=SUBSCRIPTION_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if all_reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if all_transient_local else DurabilityPolicy.VOLATILE,
    )


def bag_qos(profile: QoSProfile) -> Qos:
    """A publisher's offered QoS as rosbags stores it (so a player can offer the same QoS)."""

    def qos_time(duration) -> QosTime:
        return QosTime(*divmod(duration.nanoseconds, 1_000_000_000))

    return Qos(
        history=QosHistory[profile.history.name],
        depth=profile.depth,
        reliability=QosReliability[profile.reliability.name],
        durability=QosDurability[profile.durability.name],
        deadline=qos_time(profile.deadline),
        lifespan=qos_time(profile.lifespan),
        liveliness=QosLiveliness[profile.liveliness.name],
        liveliness_lease_duration=qos_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions,
    )


class RecorderNode(Node):
    """Subscribes raw to the contract's topics as their publishers appear and writes them to a bag."""

    def __init__(self, parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(NODE_NAME, parameter_overrides=parameter_overrides or [])
        declare_parameters(self, PARAMETERS)
        contract_path = self.get_parameter("contract").value
        extra_topics = self.get_parameter_or("extra_topics", Parameter("extra_topics", value=[])).value
        storage = self.get_parameter("storage").value
        out = self.get_parameter("out").value
        duration_s = self.get_parameter("duration").value

        topics = topics_to_record(contract_path, extra_topics)
        check_output(out)
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        unknown = sorted({t for t in topics.values() if t not in self._typestore.fielddefs})
        if unknown:
            raise RecorderError(f"message types unknown to rosbags' ROS 2 type store: {unknown}")

        self.topic_types = topics
        self.not_recorded: dict[str, str] = {}  # topic -> why
        self._classes: dict[str, type] = {}
        for topic, type_name in topics.items():
            try:
                self._classes[topic] = import_message_class(type_name)
            except ModuleNotFoundError as error:
                self.not_recorded[topic] = str(error)
                self.get_logger().error(f"cannot record {topic}: {error}")
        self._waiting = {t: ty for t, ty in topics.items() if t not in self.not_recorded}
        self._type_warnings: set[str] = set()
        self._subscriptions_by_topic: dict[str, Subscription] = {}
        self.finished = False
        self.bag_path = Path(out)
        self._writer = Writer(self.bag_path, version=Writer.VERSION_LATEST, storage_plugin=STORAGE_PLUGINS[storage])
        self._writer.open()
        self._progress = tqdm(desc=f"recording {out}", unit="msg", disable=None)
        self.get_logger().info(f"recording {len(self._waiting)} topics to {out} ({storage})")
        self._discovery_timer = self.create_timer(DISCOVERY_PERIOD_S, self._subscribe_to_discovered_topics)
        if duration_s > 0:
            self._stop_timer = self.create_timer(duration_s, self._finish)

    def _subscribe_to_discovered_topics(self) -> None:
        for topic, type_name in list(self._waiting.items()):
            publishers = self.get_publishers_info_by_topic(topic)
            matching = [p for p in publishers if p.topic_type == type_name]
            other_types = {p.topic_type for p in publishers} - {type_name}
            if other_types and topic not in self._type_warnings:
                self._type_warnings.add(topic)
                self.get_logger().error(
                    f"{topic} is published as {sorted(other_types)} but recorded as {type_name};"
                    " those publishers are ignored"
                )
            if matching:
                self._subscribe(topic, type_name, matching)
        if not self._waiting:
            self._discovery_timer.cancel()

    def _subscribe(self, topic: str, type_name: str, publishers: list[TopicEndpointInfo]) -> None:
        published_hashes = {str(p.topic_type_hash) for p in publishers}
        bag_hash = self._typestore.hash_rihs01(type_name)
        if published_hashes != {bag_hash}:
            self.get_logger().warning(
                f"{topic}: publishers' type hash {sorted(published_hashes)} differs from the bag's"
                f" definition of {type_name} ({bag_hash}); readers may decode it wrongly"
            )
        qos = subscription_qos(publishers)
        connection = self._writer.add_connection(
            topic,
            type_name,
            typestore=self._typestore,
            offered_qos_profiles=[bag_qos(p.qos_profile) for p in publishers],
        )
        self._subscriptions_by_topic[topic] = self.create_subscription(
            self._classes[topic],
            topic,
            functools.partial(self._on_message, connection),
            qos,
            raw=True,
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=functools.partial(self._on_incompatible_qos, topic)
            ),
        )
        del self._waiting[topic]
        self.get_logger().info(
            f"recording {topic} ({type_name}, {qos.reliability.name.lower()},"
            f" {qos.durability.name.lower()})"
        )

    def _on_message(self, connection: Connection, data: bytes) -> None:
        # Written on the executor thread: rosbags takes ~4 us per JointState and ~2 ms per 640x480
        # image, so direct writes keep up (1500 messages/s recorded without a loss); a writer thread
        # would need the Writer opened and used on that one thread (sqlite3 requires it) for no gain.
        self._writer.write(connection, self.get_clock().now().nanoseconds, data)
        self._progress.update()

    def _on_incompatible_qos(self, topic: str, event: QoSRequestedIncompatibleQoSInfo) -> None:
        self.get_logger().error(
            f"{topic}: a publisher's QoS is incompatible with the recorder's subscription"
            f" (policy {event.last_policy_kind}); its messages are not recorded"
        )

    def _finish(self) -> None:
        self.finished = True

    def close(self) -> dict[str, int]:
        """Stop receiving, finish the bag; messages written per topic."""
        for subscription in self._subscriptions_by_topic.values():
            self.destroy_subscription(subscription)
        self._progress.close()
        self._writer.close()
        return {c.topic: self._writer.counts[c.id] for c in self._writer.connections}


def check_output(out: str) -> None:
    if not out:
        raise RecorderError("no output bag given: set --out (parameter 'out')")
    if Path(out).exists():
        raise RecorderError(f"output bag {out} already exists; rosbag2 bags are never overwritten")


def topics_to_record(contract_path: str, extra_topics: list[str]) -> dict[str, str]:
    """topic -> ROS 2 type from the contract and the extra `TOPIC:TYPE` entries."""
    topics: dict[str, str] = {}
    if contract_path:
        try:
            topics.update(load_contract(contract_path).topics())
        except ContractError as error:
            raise RecorderError(str(error)) from error
    for entry in extra_topics:
        topic, type_name = parse_extra_topic(entry)
        if topics.get(topic, type_name) != type_name:
            raise RecorderError(f"extra topic {topic} is {type_name} but the contract says {topics[topic]}")
        topics[topic] = type_name
    if not topics:
        raise RecorderError("nothing to record: give --contract and/or --extra-topic")
    return topics


def print_summary(node: RecorderNode, counts: dict[str, int]) -> None:
    width = max(len(topic) for topic in node.topic_types)
    print(f"bag {node.bag_path}: {sum(counts.values())} messages")
    for topic, type_name in node.topic_types.items():
        if topic in node.not_recorded:
            outcome = f"NOT RECORDED: {node.not_recorded[topic]}"
        elif topic not in counts:
            outcome = "0 (no publisher of this type was discovered)"
        else:
            outcome = str(counts[topic])
        print(f"  {topic:<{width}}  {type_name:<32}  {outcome}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contract", help="observation contract YAML whose topics are recorded")
    parser.add_argument("--out", help="bag directory to create (must not exist)")
    parser.add_argument("--duration", type=float, help="seconds to record (default: until Ctrl-C/SIGTERM)")
    parser.add_argument("--storage", choices=sorted(STORAGE_PLUGINS), help="rosbag2 storage (default mcap)")
    parser.add_argument(
        "--extra-topic", action="append", metavar="TOPIC:TYPE", help="another topic to record (repeatable)"
    )
    parser.add_argument(
        "--ros-args", nargs=argparse.REMAINDER, default=[], help="ROS arguments, e.g. --ros-args -p duration:=10.0"
    )


def run(args: argparse.Namespace) -> int:
    """Record until SIGINT, SIGTERM or the duration. 0: done; 1: some topic's message package is
    missing (the others were recorded); RecorderError reaches the user through mvp_ros.cli."""
    with ros_context("mvp record", args.ros_args, NODE_NAME) as stop:
        given = {"contract": args.contract, "out": args.out, "duration": args.duration, "storage": args.storage,
                 "extra_topics": args.extra_topic}
        node = RecorderNode(overrides(given))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set() and not node.finished:
                executor.spin_once(timeout_sec=DISCOVERY_PERIOD_S)
        finally:
            counts = node.close()
            node.destroy_node()
    print_summary(node, counts)
    return 1 if node.not_recorded else 0


def main() -> int:
    """Runs the node directly (`python -m mvp_ros.ros.recorder_node --out BAG ...`), as `mvp record`."""
    from mvp_ros.cli import main as mvp_main

    return mvp_main(["record", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
