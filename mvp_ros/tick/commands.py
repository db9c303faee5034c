"""What the node may send: every command limited, and a safe action that always exists.

Position targets are the action names that are also joints of a JointState `position`
observation in the contract: the robot measures them. For those dims a command is first clipped to
the last command +- max_delta, then to the measured position +- max_delta, so a command never
lands more than max_delta from where the robot measurably is, whatever the policy asks. Other dims
(deltas, a gripper command) are clipped to the last command +- max_delta; with no command sent
since activate, reset or a hold, they are clipped around the safe action instead. Everything is
clipped to the contract's limits last.

Relative outputs (contract `relative_to`) are offsets from the measured position, not position
targets: they are limited as offsets (limits, max_delta from the last offset), and the measured
position is added when the command is sent (mvp_ros.tick.core).

The safe action (contract `safe_action`) never waits for a first command: `hold` keeps the last
command, or, with none since activate or reset, the measured position of position targets, zero for
the `zero` dims and the contract's `initial` values for the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvp_ros.data.contract import ActionSpec, Contract, JointStateObservation


@dataclass(frozen=True)
class Command:
    """One publication: the action to send now; the actions planned for the next control periods,
    limited as the action is (empty for a hold, or when no output publishes chunks); and the time of
    the observation it answers, on the node's clock (for a hold: when it began)."""

    action: np.ndarray
    stamp_ns: int
    plan: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass(frozen=True)
class TrajectoryPoints:
    """A JointTrajectory's points: time_from_start (ns from the header stamp), positions, velocities."""

    times_ns: list[int]
    positions: np.ndarray
    velocities: np.ndarray


def chunk_points(command: Command, dims: slice, period_ns: int, now_ns: int) -> TrajectoryPoints:
    """The command and its plan as trajectory points, a control period apart: point k (the action of
    k periods after the observation) is reached k + 1 periods after the command's stamp, as a one-point
    command is reached one period after it. Velocities are the central differences of the positions,
    zero at the last point (the arm stops where the plan ends). Points due less than half a period
    after `now_ns` are dropped, except the last one: the controller cannot reach the past, and a point
    due a moment after a late command arrives would ask it for an extreme velocity."""
    positions = np.concatenate([command.action[None, dims], command.plan[:, dims]]) if len(command.plan) else \
        command.action[None, dims]
    velocities = np.zeros_like(positions)
    if len(positions) > 1:
        velocities[:-1] = np.gradient(positions, period_ns / 1e9, axis=0)[:-1]
    times_ns = [(k + 1) * period_ns for k in range(len(positions))]
    first = min(len(times_ns) - 1, sum(command.stamp_ns + time_ns < now_ns + period_ns // 2 for time_ns in times_ns))
    return TrajectoryPoints(times_ns[first:], positions[first:], velocities[first:])


@dataclass(frozen=True)
class MeasuredJoint:
    """An action dim that the robot measures: observation `key`, element `index` of its array."""

    dim: int
    name: str
    key: str
    index: int


def measured_joints(contract: Contract, action: ActionSpec) -> list[MeasuredJoint]:
    """The action names that a JointState position observation of the contract measures (position
    targets; not the dims of relative outputs, whose actions are offsets)."""
    relative = {name for output in action.streams() if output.relative_to for name in output.names}
    found: dict[str, MeasuredJoint] = {}
    for key, spec in contract.observations.items():
        if isinstance(spec, JointStateObservation) and spec.field == "position":
            for index, joint in enumerate(spec.joints):
                if joint in action.names and joint not in found and joint not in relative:
                    found[joint] = MeasuredJoint(action.names.index(joint), joint, key, index)
    return sorted(found.values(), key=lambda joint: joint.dim)


def relative_joints(contract: Contract, action: ActionSpec) -> list[MeasuredJoint]:
    """The dims of relative outputs, each with the joint of its relative_to key it is added to."""
    joints = []
    for output, dims in zip(action.streams(), action.slices()):
        if output.relative_to:
            spec = contract.observations[output.relative_to]
            joints += [MeasuredJoint(dim, name, output.relative_to, spec.joints.index(name))
                       for dim, name in zip(range(dims.start, dims.stop), output.names)]
    return joints


class CommandGuard:
    def __init__(self, action: ActionSpec, measured: list[MeasuredJoint], relative: list[MeasuredJoint] = ()) -> None:
        self.action = action
        self.measured = measured
        self.relative = list(relative)
        self.dims = np.array([joint.dim for joint in measured], dtype=np.intp)
        self._relative_positions: np.ndarray | None = None  # latest measured position of each relative dim
        self.last_command: np.ndarray | None = None  # since activate, reset or the last hold's end
        self._positions: dict[str, float] = {}  # latest measured position of each measured joint

    def check(self) -> None:
        """ValueError if this action cannot be kept safe: position targets without max_delta, or a
        dim that `hold` has no value for before a first command."""
        measured = [joint.name for joint in self.measured]
        max_delta = self.action.max_delta
        unlimited = [joint.name for joint in self.measured if max_delta is None or not np.isfinite(max_delta[joint.dim])]
        if unlimited:
            raise ValueError(
                f"action dims {unlimited} are position targets of measured joints, and no max_delta limits how far a"
                " command may be from where they are: give action.max_delta in the contract or the parameter 'max_delta'")
        undefined = self.action.unsafe_dims_without_command(tuple(measured))
        if undefined:
            raise ValueError(
                f"the safe action (rule hold) has no value for {undefined} before a first command: list them under"
                " action.safe_action.zero (motion that stops at 0) or give their values in action.safe_action.initial")

    @property
    def keys(self) -> set[str]:
        """The observation keys that measure action dims (position targets, or what relative dims add to)."""
        return {joint.key for joint in self.measured + self.relative}

    def offset(self, samples: dict[str, np.ndarray] | None = None) -> np.ndarray | None:
        """What to add to a command before sending it: the measured position for relative dims (from
        `samples`, default the latest measured), 0 elsewhere; None if a relative dim was never measured."""
        offset = np.zeros(len(self.action.names))
        if not self.relative:
            return offset
        if samples is not None:
            positions = np.array([samples[joint.key][joint.index] for joint in self.relative])
        elif self._relative_positions is None:
            return None
        else:
            positions = self._relative_positions
        offset[[joint.dim for joint in self.relative]] = positions
        return offset

    def reset(self) -> None:
        """A new episode or activation: no command has been sent."""
        self.last_command = None

    def measure(self, samples: dict[str, np.ndarray]) -> None:
        """New samples of observation keys (any keys; those that measure action dims are kept; NaN
        marks a joint not measured yet)."""
        for joint in self.measured:
            if joint.key in samples and np.isfinite(samples[joint.key][joint.index]):  # NaN: its source not heard yet
                self._positions[joint.name] = float(samples[joint.key][joint.index])
        if self.relative and all(joint.key in samples for joint in self.relative):
            positions = np.array([samples[joint.key][joint.index] for joint in self.relative])
            if np.isfinite(positions).all():
                self._relative_positions = positions

    def safe_action(self) -> np.ndarray | None:
        """The safe action now, inside the limits; None if a dim has no safe value (nothing measured yet)."""
        safe = self.action.safe_action(self.last_command, self._positions)
        return None if safe is None else np.clip(safe, self.action.lower, self.action.upper)

    def limit(self, action: np.ndarray, fresh: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's action limited as the module docstring says; `fresh` holds the samples of
        this tick (the measured keys must be among them)."""
        command = np.asarray(action, dtype=np.float64)
        max_delta = self.action.max_delta
        if max_delta is not None:
            reference = self.last_command if self.last_command is not None else self.action.safe_action(None, self._positions)
            if reference is not None:
                command = np.clip(command, reference - max_delta, reference + max_delta)
            if len(self.dims):
                measured = np.array([fresh[joint.key][joint.index] for joint in self.measured])
                command[self.dims] = np.clip(command[self.dims], measured - max_delta[self.dims], measured + max_delta[self.dims])
        return np.clip(command, self.action.lower, self.action.upper)

    def limit_plan(self, command: np.ndarray, planned: np.ndarray) -> np.ndarray:
        """The planned actions after `command`, each within max_delta of the one before and within the
        limits: so the whole plan stays as close to the measured position as the per-tick commands would."""
        limited, previous = np.empty_like(planned), command
        for step, action in enumerate(planned):
            if self.action.max_delta is not None:
                action = np.clip(action, previous - self.action.max_delta, previous + self.action.max_delta)
            limited[step] = previous = np.clip(action, self.action.lower, self.action.upper)
        return limited

    def sent(self, command: np.ndarray) -> None:
        self.last_command = command
