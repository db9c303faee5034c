"""`mvp policy-node`: the lifecycle node that runs a policy every control tick.

A thin adapter: subscriptions, the control timer, the command publisher, lifecycle, services and
diagnostics around the ROS-free tick core (mvp_ros/tick/core.py), which holds every rule about what
is published when: waiting for fresh samples, holds, limits, the watchdog.

Lifecycle (no `ros2 lifecycle` CLI is needed: `autostart` configures and activates at start, and
the `~/start`, `~/stop`, `~/reset` std_srvs/Trigger services drive it):
  configure   load the checkpoint, check it and the data contract it stores against the node's
              contract, warm the model up (compiling it or capturing its CUDA graph, as `execution`
              says; outputs must be finite), subscribe to the observation topics
  activate    start the control timer (on sim time with use_sim_time) and the watchdog thread; with
              `thread_priority`, run the executor's thread (the ticks) under SCHED_FIFO
  deactivate  stop the timer and the watchdog, publish the safe action, return to the normal scheduler
  shutdown    (SIGINT/SIGTERM) publish the safe action, then exit

Diagnostics (/diagnostics, 1 Hz on the steady clock): tick latency p50/p99 (observation ready ->
command published), inference time, observation ages, counts of ticks, holds, stale ticks, missed
ticks, overruns, watchdog firings and rejected messages by topic and reason. A period in which
anything held is WARN; one in which the watchdog fired or a command was withheld is ERROR.

    mvp policy-node --checkpoint models/lift_lowdim --ros-args --params-file config/policy_node.yaml
"""
from __future__ import annotations

import argparse
import array
import dataclasses
import functools
from dataclasses import dataclass
import io
import math
import sys
import threading
import time
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration as DurationMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rclpy.time import Time
from std_msgs.msg import Float64MultiArray, Int64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mvp_ros.data.contract import TRAJECTORY, ActionSpec, Contract, TransformObservation, load_contract
from mvp_ros.ros.diagnostics import diagnostic_array, status
from mvp_ros.ros.message_types import import_message_class
from mvp_ros.ros.node_main import add_ros_args_argument, console_main, overrides, ros_context
from mvp_ros.ros.parameters import ParameterSpec, declare_parameters
from mvp_ros.ros.policy_checks import ConfigurationError, check_policy_against_contract, import_tf2_ros
from mvp_ros.ros.qos import RELIABLE_QOS, SENSOR_QOS
from mvp_ros.ros.realtime import check_priority, raise_thread_priority, restore_scheduling, scheduling
from mvp_ros.tick.commands import Command, chunk_points
from mvp_ros.tick.core import TickCore, build_tick_core

NODE_NAME = "mvp_policy"
DIAGNOSTICS_PERIOD_S = 1.0
WATCHDOG_PERIODS = 5  # the watchdog's default deadline, in control periods
COUNTED = ("ticks", "commands", "holds", "stale_ticks", "missed_ticks", "overruns", "non_finite_chunks", "withheld",
           "watchdog", "episodes")

PARAMETERS: dict[str, ParameterSpec] = {
    "checkpoint": ParameterSpec("", "policy checkpoint directory (model.safetensors + config.json)"),
    "contract": ParameterSpec("", "observation contract YAML: topics, keys, action limits, safe action"),
    "device": ParameterSpec("auto",
        "torch device for inference: auto (cuda when available), cpu or cuda",
        choices=("auto", "cpu", "cuda")),
    "control_rate_hz": ParameterSpec(0.0,
        "control ticks per second on the node's clock; 0: the contract's rate (a different rate than the "
        "checkpoint was trained at is refused)",
        minimum=0.0, maximum=10_000.0),
    "execute_steps": ParameterSpec(0,
        "actions executed from each chunk before re-planning; 0: the whole chunk (1 with "
        "temporal_ensemble)",
        minimum=0, maximum=10_000),
    "temporal_ensemble": ParameterSpec(True, "average the overlapping predictions of successive chunks (ACT)"),
    "ensemble_decay": ParameterSpec(0.01,
        "temporal ensembling: weight exp(-decay * i), oldest prediction i = 0",
        minimum=0.0, maximum=100.0),
    "max_observation_age_s": ParameterSpec(0.0,
        "cap on every key's age limit in seconds; 0: the contract's limits only",
        minimum=0.0, maximum=3_600.0),
    "execution": ParameterSpec("auto",
        "how inference runs: auto (a captured CUDA graph on a GPU, eager on a CPU), eager, compile "
        "(torch.compile at configure: seconds to minutes), aot (AOTInductor at configure, a CPU only: the"
        " least time per call), cuda_graph",
        choices=("auto", "eager", "compile", "aot", "cuda_graph")),
    "num_candidates": ParameterSpec(1,
        "generate and select: sample this many one-step candidate chunks in one batched call and execute "
        "the one the critic beside the checkpoint (mvp train --algo mvp-rl) scores highest; 1: the policy "
        "alone, no critic",
        minimum=1, maximum=1024),
    "torch_threads": ParameterSpec(1,
        "CPU threads torch may use; 1 avoids the hand-off stalls that several threads cause for a small "
        "network on a busy CPU",
        minimum=1, maximum=1024),
    "thread_priority": ParameterSpec(0,
        "SCHED_FIFO real-time priority (1-99) of the thread that runs the ticks while active, as "
        "ros2_control's thread_priority; 0: the normal scheduler. Needs CAP_SYS_NICE or an rtprio limit; "
        "if refused, the node warns and ticks under the normal scheduler",
        minimum=0, maximum=99),
    "warmup_iterations": ParameterSpec(10,
        "inference calls at configure (at least one, whose outputs must be finite), so the first real "
        "tick is not slow",
        minimum=0, maximum=100_000),
    "inference_timeout_s": ParameterSpec(0.0,
        "a tick slower than this (observation ready -> command) publishes the safe action instead; 0: one"
        " control period",
        minimum=0.0, maximum=60.0),
    "watchdog_timeout_s": ParameterSpec(0.0,
        "while active, publish the safe action whenever no command went out for this long on the steady "
        "clock (a starved executor, a dead simulation clock); 0: five control periods",
        minimum=0.0, maximum=60.0),
    "allow_checkpoint_without_contract": ParameterSpec(False,
        "run a checkpoint that stores no data contract (older checkpoints), which cannot be checked "
        "against the node's contract; warns at every configure"),
    "max_delta": ParameterSpec(Parameter.Type.DOUBLE_ARRAY,
        "largest change of each action dim per tick; unset: the contract's max_delta",
        minimum=1e-9, maximum=1e9),
    "autostart": ParameterSpec(True, "configure and activate at start (no lifecycle manager needed)"),
    "seed": ParameterSpec(0,
        "seed of the policy's sampling noise, used at activation and by ~/reset",
        minimum=0, maximum=2**63 - 1),
    "reset_topic": ParameterSpec("",
        "std_msgs/Int64 topic announcing a new episode and its seed (e.g. /mvp_sim/episode_start); empty:"
        " none"),
}


class PolicyNode(LifecycleNode):
    def __init__(self, parameter_overrides: list[Parameter] | None = None) -> None:
        super().__init__(NODE_NAME, parameter_overrides=parameter_overrides or [])
        declare_parameters(self, PARAMETERS)
        self.state_label = "unconfigured"
        self.configure_error = ""
        self.scheduling = scheduling()  # of the executor's thread, which runs the ticks
        self._scheduling_before = None  # how that thread was scheduled before activate raised its priority
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._lock = threading.Lock()  # the core is driven by the executor's thread and the watchdog's
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, clock=self._steady)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._jump_handle = self.get_clock().create_jump_callback(  # kept: rclpy needs the handle alive
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self._on_clock_jumped_back,
        )
        self._runtime_entities: list[Any] = []
        self._timer = None
        self.contract: Contract | None = None
        self.core: TickCore | None = None
        self.command_publishers: list[OutputPublisher] = []

    # ---- lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as error:  # noqa: BLE001 - rclpy would swallow it; report it and stay unconfigured
            self.configure_error = str(error)
            self.get_logger().error(f"configure failed: {error}")
            self._destroy_runtime()
            self.core = None
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self.state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self.core.activate(self.get_parameter("seed").value, self._now_ns())
        self._raise_thread_priority(self.get_parameter("thread_priority").value)
        self._timer = self.create_timer(self.period_ns / 1e9, self._on_timer)
        self._start_watchdog()
        self.state_label = "active"
        self.get_logger().info(f"active: ticking at {1e9 / self.period_ns:g} Hz on the {self.get_clock().clock_type.name} clock"
                               f" ({self.scheduling}); watchdog after {self.core.watchdog_s * 1e3:.0f} ms without a command")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_ticking()
        self.state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_runtime()
        self.core = None
        self.state_label = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._timer is not None:
            self._stop_ticking()
        self._destroy_runtime()
        self.state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        import torch  # imported only by a node that runs a policy

        from mvp_ros.policy import Policy

        checkpoint, contract_path = self.get_parameter("checkpoint").value, self.get_parameter("contract").value
        if not checkpoint:
            raise ConfigurationError("parameter 'checkpoint' is empty: give the policy checkpoint directory")
        if not contract_path:
            raise ConfigurationError("parameter 'contract' is empty: give the observation contract YAML")
        self.contract = load_contract(contract_path)
        try:
            check_priority(self.get_parameter("thread_priority").value)
        except ValueError as error:
            raise ConfigurationError(f"parameter {error}") from None
        torch.set_num_threads(self.get_parameter("torch_threads").value)
        started = time.perf_counter()
        rate_hz = self.get_parameter("control_rate_hz").value or self.contract.control_rate_hz
        self.period_ns = round(1e9 / rate_hz)
        self.policy = Policy.load(checkpoint, device=self.get_parameter("device").value,
                                  execution=self.get_parameter("execution").value,
                                  best_of=self.get_parameter("num_candidates").value)
        for note in check_policy_against_contract(
                self.policy, self.contract, contract_path, control_rate_hz=rate_hz,
                allow_without_contract=self.get_parameter("allow_checkpoint_without_contract").value):
            self.get_logger().warning(note)
        self.action_spec = self._action_spec()
        timeout_s = self.get_parameter("inference_timeout_s").value
        watchdog_s = self.get_parameter("watchdog_timeout_s").value
        self.core = build_tick_core(
            self.policy, self.policy.horizon, self.contract, self.action_spec, period_ns=self.period_ns,
            execute=self.get_parameter("execute_steps").value or None,
            temporal_ensemble=self.get_parameter("temporal_ensemble").value,
            ensemble_decay=self.get_parameter("ensemble_decay").value,
            max_age_s=self.get_parameter("max_observation_age_s").value,
            tick_timeout_s=timeout_s if timeout_s > 0 else self.period_ns / 1e9,
            watchdog_s=watchdog_s if watchdog_s > 0 else WATCHDOG_PERIODS * self.period_ns / 1e9,
            publish=self._publish, steady=time.perf_counter, log=self._log, decode=self._decode,
        )
        specs = self.core.buffer.specs
        tf_keys = [key for key, spec in specs.items() if isinstance(spec, TransformObservation)]
        self._tf_lookup = self._tf_source(tf_keys) if tf_keys else None
        self._warm_up()
        self._create_runtime_entities()
        self.get_logger().info(
            f"configured: {checkpoint} ({self.policy.config.head}, horizon {self.policy.horizon},"
            f" {self.policy.device}, {self.policy.execution}"
            f"{f', best of {self.policy.best_of} by its critic' if self.policy.best_of > 1 else ''}) with {contract_path};"
            f" loaded and warmed up in {time.perf_counter() - started:.2f} s;"
            f" executing {self.core.chunks.execute} of {self.policy.horizon} actions per chunk"
            f"{' with temporal ensembling' if self.core.chunks.temporal_ensemble else ''}; position targets limited"
            f" from the measured joints: {[joint.name for joint in self.core.guard.measured] or 'none'}"
        )

    def _action_spec(self) -> ActionSpec:
        max_delta = self.get_parameter_or("max_delta", Parameter("max_delta", value=None)).value
        if max_delta is None:
            return self.contract.action
        names = self.contract.action.names
        if len(max_delta) != len(names) or not all(0 < value < math.inf for value in max_delta):
            raise ConfigurationError(f"parameter 'max_delta' needs {len(names)} finite values > 0 (one per {list(names)}),"
                                     f" got {list(max_delta)}")
        return dataclasses.replace(self.contract.action, max_delta=np.asarray(max_delta, dtype=np.float64))

    def _tf_source(self, keys: list[str]):
        tf2_ros = import_tf2_ros(keys)
        tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(tf_buffer, self)
        buffer = self.core.buffer
        specs = [buffer.specs[key] for key in keys]

        def lookup() -> None:
            for spec in specs:
                try:
                    transform = tf_buffer.lookup_transform(spec.parent_frame, spec.child_frame, Time())
                    buffer.store({spec.key: (spec.extract(transform), spec.stamp(transform, 0))}, time.perf_counter())
                except Exception as error:  # noqa: BLE001 - tf2 raises several types; the key stays stale
                    self.core.log_throttled("warn", ("/tf", spec.key), f"no transform for {spec.key}: {error}")

        return lookup

    def _warm_up(self) -> None:
        """Run the policy on zero observations; a checkpoint whose outputs are not finite is refused."""
        shapes = self.policy.config.obs_shapes
        zeros = {key: np.zeros(shape, dtype=np.uint8 if len(shape) == 3 else np.float64) for key, shape in shapes.items()}
        for _ in range(max(1, self.get_parameter("warmup_iterations").value)):
            chunk = self.policy.act(zeros)
            if not np.isfinite(chunk).all():
                raise ConfigurationError(f"{self.policy.info.directory if self.policy.info else 'the checkpoint'} produces"
                                         " NaN or inf actions at warm-up: its weights or normalization are broken")
        self.policy.reset()

    def _create_runtime_entities(self) -> None:
        self.command_publishers = []
        for output, part in zip(self.action_spec.streams(), self.action_spec.slices()):
            trajectory = output.msgtype == TRAJECTORY
            publisher = self.create_publisher(JointTrajectory if trajectory else Float64MultiArray, output.topic,
                                              RELIABLE_QOS)
            # One message per output, refilled every tick: names and a one-point trajectory's point are set once
            if trajectory:
                time_from_start_ns = round(output.time_from_start_s * 1e9) if output.time_from_start_s else self.period_ns
                message = JointTrajectory(joint_names=list(output.names), points=[
                    JointTrajectoryPoint(time_from_start=_duration_msg(time_from_start_ns))])
            else:
                message = Float64MultiArray()
            self.command_publishers.append(OutputPublisher(part, publisher, message, output.msgtype, output.chunk))
            self._runtime_entities.append(publisher)
        reset_topic = self.get_parameter("reset_topic").value
        if reset_topic:
            # Created before the observation subscriptions: within one executor round the episode
            # start is handled before the first observations of the episode.
            self._runtime_entities.append(self.create_subscription(Int64, reset_topic, self._on_episode_start, RELIABLE_QOS))
        self._message_classes = {}
        for topic, specs in self.core.buffer.topics.items():
            self._message_classes[topic] = import_message_class(specs[0].msgtype)
            callback = functools.partial(self._on_observation, topic)
            # Serialized: the core decodes only the messages it reads, so a flood costs little
            self._runtime_entities.append(self.create_subscription(self._message_classes[topic], topic, callback,
                                                                   SENSOR_QOS, raw=True))

    def _destroy_runtime(self) -> None:
        publishers = [output.publisher for output in self.command_publishers]
        for entity in self._runtime_entities:
            if entity in publishers:
                self.destroy_publisher(entity)
            else:
                self.destroy_subscription(entity)
        self._runtime_entities.clear()
        self.command_publishers = []

    def _stop_ticking(self) -> None:
        self.destroy_timer(self._timer)
        self._timer = None
        self._stop_watchdog()
        with self._lock:
            self.core.deactivate("deactivated", self._now_ns())
        for output in self.command_publishers:  # delivered before anything else happens
            output.publisher.wait_for_all_acked(Duration(seconds=1))
        if self._scheduling_before is not None:  # idle work (a reconfigure's compile, say) must not run real-time
            restore_scheduling(self._scheduling_before)
            self._scheduling_before = None
            self.scheduling = scheduling()

    def _raise_thread_priority(self, priority: int) -> None:
        """This thread (the executor's, which runs the ticks) under SCHED_FIFO while active."""
        if priority:
            try:
                self._scheduling_before = raise_thread_priority(priority)
            except PermissionError as error:
                self.scheduling = f"{scheduling()} (thread_priority {priority} refused)"
                self.get_logger().warning(f"ticking under the normal scheduler: {error}")
                return
        self.scheduling = scheduling()

    # ---- the watchdog: its own thread, so a flooded or stalled executor cannot silence the node --

    def _start_watchdog(self) -> None:
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="mvp_policy_watchdog", daemon=True)
        self._watchdog.start()

    def _stop_watchdog(self) -> None:
        self._watchdog_stop.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None

    def _watch(self) -> None:
        while not self._watchdog_stop.wait(self.core.watchdog_s / 4):
            with self._lock:
                self.core.watchdog(self._now_ns())

    # ---- services and episode boundaries --------------------------------------------------------

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.state_label == "unconfigured" and self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            response.success, response.message = False, f"configure failed: {self.configure_error}"
            return response
        if self.state_label == "inactive":
            self.trigger_activate()
        response.success = self.state_label == "active"
        response.message = self.state_label
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.state_label == "active":
            self.trigger_deactivate()
        response.success, response.message = self.state_label != "active", self.state_label
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.state_label not in ("inactive", "active"):
            response.success, response.message = False, f"cannot reset while {self.state_label}"
            return response
        seed = self.get_parameter("seed").value
        with self._lock:
            self.core.begin_episode(seed, self._now_ns())
        response.success, response.message = True, f"new episode, seed {seed}"
        return response

    def _on_episode_start(self, msg: Int64) -> None:
        with self._lock:
            self.core.begin_episode(int(msg.data), self._now_ns())

    def _on_clock_jumped_back(self, jump: Any) -> None:
        if self.core is not None:
            self.get_logger().warning(f"clock jumped back by {-jump.delta.nanoseconds / 1e9:.3f} s: starting a new episode")
            with self._lock:
                self.core.clock_jumped_back(self.get_parameter("seed").value, self._now_ns())

    # ---- control ticks --------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_observation(self, topic: str, msg: Any) -> None:
        with self._lock:
            self.core.observe(topic, msg, self._now_ns())

    def _on_timer(self) -> None:
        with self._lock:
            if self._tf_lookup is not None:
                self._tf_lookup()
            self.core.timer(self._now_ns())

    def _decode(self, topic: str, data: bytes) -> Any:
        return deserialize_message(data, self._message_classes[topic])

    def _publish(self, command: Command) -> None:
        now = self.get_clock().now()
        for output in self.command_publishers:
            msg = output.message
            if output.chunk:
                points = chunk_points(command, output.dims, self.period_ns, now.nanoseconds)
                msg.header.stamp = Time(nanoseconds=command.stamp_ns).to_msg()
                msg.points = [JointTrajectoryPoint(positions=array.array("d", positions.tobytes()),
                                                   velocities=array.array("d", velocities.tobytes()),
                                                   time_from_start=_duration_msg(time_ns))
                              for time_ns, positions, velocities in zip(points.times_ns, points.positions,
                                                                        points.velocities)]
                output.publisher.publish(msg)
                continue
            values = array.array("d", command.action[output.dims].astype(np.float64).tobytes())  # no per-element checks
            if output.msgtype == TRAJECTORY:
                msg.points[0].positions = values
                msg.header.stamp = now.to_msg()
            else:
                msg.data = values
            output.publisher.publish(msg)

    def _log(self, level: str, text: str) -> None:
        # One call per severity: rclpy refuses a second severity from the same line ("Logger severity
        # cannot be changed between calls"), which ended the node at its first warning after an error.
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warn":
            logger.warning(text)
        else:
            logger.info(text)

    # ---- diagnostics ----------------------------------------------------------------------------

    def diagnostics_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"state": self.state_label, "scheduling": self.scheduling}
        if self.configure_error:
            values["configure_error"] = self.configure_error
        core = self.core
        if core is None:
            return values
        values.update({name: core.totals[name] for name in COUNTED})
        values.update({
            "tick_latency_ms_p50": core.tick_latency_ms.percentile(50),
            "tick_latency_ms_p99": core.tick_latency_ms.percentile(99),
            "inference_ms_p50": core.inference_ms.percentile(50),
            "inference_ms_p99": core.inference_ms.percentile(99),
            "last_command_age_s": time.perf_counter() - core.last_publish_s,
            "holding": core.hold_reason or "",
            "stale_keys": ",".join(core.stale_keys),
        })
        buffer = core.buffer
        for key, age in buffer.ages_s(self._now_ns()).items():
            values[f"age_ms.{key}"] = "none" if age is None else age * 1e3
        values["rejected"] = sum(buffer.rejects.values())
        for topic, count in sorted(core.superseded.items()):
            values[f"superseded.{topic}"] = count
        for (topic, reason), count in sorted(buffer.rejects.items()):
            values[f"rejected.{topic}.{reason}"] = count
        for topic, what in sorted(buffer.last_reject.items()):
            values[f"last_reject.{topic}"] = what
        return values

    def _publish_diagnostics(self) -> None:
        """One status per period: WARN or ERROR if anything happened during it, not only at its end."""
        with self._lock:
            values = self.diagnostics_values()
            period = self.core.take_period() if self.core is not None else None
        if period is not None and period.level == "error":
            level, message = DiagnosticStatus.ERROR, f"{self.state_label}: {period.message()}"
        elif self.state_label != "active":
            level, message = DiagnosticStatus.WARN, f"not ticking ({self.state_label})"
        elif period.level == "warn":
            level, message = DiagnosticStatus.WARN, period.message()
        else:
            level, message = DiagnosticStatus.OK, "ticking"
        robot = self.contract.robot if self.contract else ""
        self._diagnostics.publish(
            diagnostic_array(self.get_clock().now().to_msg(),
                             status(f"{self.get_name()}: control", level, message, robot, values))
        )


@dataclass(frozen=True)
class OutputPublisher:
    """One action output: its dims of the action vector, its publisher and the message it refills."""

    dims: slice
    publisher: Any
    message: Any
    msgtype: str
    chunk: bool


def _duration_msg(nanoseconds: int) -> DurationMsg:
    return DurationMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="policy checkpoint directory (parameter 'checkpoint')")
    parser.add_argument("--contract", help="observation contract YAML (parameter 'contract')")
    parser.add_argument("--device", help="auto, cpu or cuda (parameter 'device')")
    add_ros_args_argument(parser)


def control_executor() -> Executor:
    """rclpy's EventsExecutor where this rclpy has one (Jazzy and later), the SingleThreadedExecutor
    otherwise. The EventsExecutor queues ready entities in C++ instead of rebuilding a wait set in
    Python for every callback (about 0.15 ms each here, several times per tick): in `mvp bench`,
    observation published -> command received p99 2.5-3.3 ms against 3.9-5.5 ms, three runs each."""
    try:
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    except (ImportError, io.UnsupportedOperation):  # it enables faulthandler, which needs a real stderr
        return SingleThreadedExecutor()


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; with autostart, a failed configure ends the command with status 2."""
    given = {"checkpoint": args.checkpoint, "contract": args.contract, "device": args.device}
    with ros_context("mvp policy-node", args.ros_args, NODE_NAME) as stop:
        node = PolicyNode(overrides(given))
        executor = control_executor()
        executor.add_node(node)
        node.get_logger().info(f"spinning with rclpy's {type(executor).__name__}")
        try:
            if node.get_parameter("autostart").value:
                if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                    raise ConfigurationError(node.configure_error)
                node.trigger_activate()
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
            if node.state_label != "finalized":
                node.trigger_shutdown()  # publishes the safe action when it was ticking
        finally:
            node.destroy_node()
    return 0


main = console_main("policy-node")  # `ros2 run mvp_ros policy_node`: the same as `mvp policy-node`


if __name__ == "__main__":
    sys.exit(main())
