"""The observation contract: which ROS 2 topics make up a robot's observation and action, and how
each message becomes the array the policy sees.

One YAML file per robot (schema documented in config/contract_example.yaml) drives both bag ->
dataset conversion (`mvp bag2hdf5`) and live inference, so training and deployment read messages
the same way. Extractors only read message attributes (`msg.name`, `msg.position`,
`msg.header.stamp.sec`, ...), so they work on rosbags-deserialized messages and on rclpy messages
alike; nothing here imports rclpy.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml

from mvp_ros.data.images import CHANNELS, RESIZE_INTERPOLATIONS, Crop, ImageFit, decode_compressed, raw_pixels

CONTRACT_VERSION = 1
TF_TOPICS = {"/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage"}
ALIGN_RULES = ("asof", "hold", "next")
STAMP_SOURCES = ("header", "receive")
IMAGE_ENCODINGS = ("rgb8", "mono8")  # what a contract may store; messages may also be bgr8


class ContractError(ValueError):
    """The contract itself is malformed; the message names the file and the offending key."""


class MessageError(ValueError):
    """A message does not fit the contract (missing joint, wrong length, image size, ...)."""


class NonFiniteError(MessageError):
    """A message carries NaN or inf where the contract reads it."""


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class Alignment:
    """How a stream is sampled at a control tick t.

    asof: the latest sample stamped at or before t, if it is at most tolerance_s old.
    hold: the latest sample at or before t, however old (bounded only by max_age_s).
    next: the first sample stamped at or after t, at most tolerance_s later (actions only: the
          command issued in response to the observation at t).
    """

    rule: str
    tolerance_s: float | None = None

    def to_dict(self) -> dict:
        return {"rule": self.rule} if self.tolerance_s is None else {"rule": self.rule, "tolerance_s": self.tolerance_s}


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """What observations and the action share: a topic, a message type and a sampling rule.
    Subclasses have a `key` and implement `values` for their message type."""

    topic: str | None
    msgtype: str
    align: Alignment
    stamp_source: str
    max_age_s: float | None = None
    partial: bool = False  # one of several publishers of its topic: a message may be another's

    def stamp(self, msg: Any, receive_time_ns: int) -> int:
        """The sample time in ns: the header stamp, or the receive time, per the contract."""
        return stamp_ns(msg.header.stamp) if self.stamp_source == "header" else int(receive_time_ns)

    def values(self, msg: Any) -> np.ndarray:
        """The array for this stream, checked for structure (not for NaN); per message type."""
        raise NotImplementedError

    def streams(self) -> tuple[StreamSpec, ...]:
        """The topic-bound streams this key is read from (or, for the action, written to): itself,
        or its sources or outputs; none for a tf key."""
        return (self,) if self.topic is not None else ()

    def applies(self, msg: Any) -> bool:
        """Whether a message on this stream's topic carries this stream's values (a JointState
        source shares its topic with other publishers)."""
        return True

    def assemble(self, values: list[np.ndarray]) -> np.ndarray:
        """The key's array from its streams' arrays (same order as `streams()`; any leading axes)."""
        return values[0]

    def extract(self, msg: Any) -> np.ndarray:
        """One message -> the array for this stream; MessageError (or NonFiniteError) if it doesn't fit."""
        array = self.values(msg)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise NonFiniteError(f"{self.key}: {self.topic or '/tf'} message has NaN or inf in {array.tolist()}")
        return array

    def age_limit_s(self) -> float:
        """The oldest a sample may be at a tick (asof: tolerance; hold: max_age_s or unbounded)."""
        limits = [self.max_age_s, self.align.tolerance_s if self.align.rule != "hold" else None]
        return min((limit for limit in limits if limit is not None), default=math.inf)

    def _common_dict(self) -> dict:
        fields = {"type": self.msgtype}
        if self.topic is not None:
            fields["topic"] = self.topic
        fields.update(align=self.align.to_dict(), stamp=self.stamp_source)
        if self.max_age_s is not None:
            fields["max_age_s"] = self.max_age_s
        return fields


@dataclass(frozen=True, kw_only=True)
class ObservationSpec(StreamSpec):
    """One observation key. Subclasses implement `values` for their message type."""

    key: str
    shape: tuple[int, ...]
    dtype: ClassVar[np.dtype] = np.dtype(np.float64)

    def to_dict(self) -> dict:
        return self._common_dict() | self._own_dict()

    def _own_dict(self) -> dict:
        return {}

    def _error(self, what: str) -> MessageError:
        return MessageError(f"{self.key}: {self.topic} {self.msgtype.rsplit('/', 1)[-1]} {what}")


@dataclass(frozen=True, kw_only=True)
class JointStateObservation(ObservationSpec):
    """sensor_msgs/JointState: one field (position, velocity, effort) of joints selected by name."""

    field: str
    joints: tuple[str, ...]
    sources: tuple[JointStateObservation, ...] = ()  # several publishers, each a part of `joints`
    _index_cache: dict = dataclass_field(default_factory=dict, compare=False, repr=False)

    def streams(self) -> tuple[StreamSpec, ...]:
        return self.sources or (self,)

    def applies(self, msg: Any) -> bool:
        return self.applies_to_names(tuple(msg.name))

    def applies_to_names(self, names: tuple[str, ...]) -> bool:
        return not self.partial or any(name in self.joints for name in names)

    def assemble(self, values: list[np.ndarray]) -> np.ndarray:
        if not self.sources:
            return values[0]
        published = [joint for source in self.sources for joint in source.joints]
        return np.concatenate(values, axis=-1)[..., [published.index(joint) for joint in self.joints]]

    def joint_indices(self, names: tuple[str, ...]) -> np.ndarray:
        """Where each contract joint sits in a message whose joint names are `names` (cached)."""
        index = self._index_cache.get(names)
        if index is None:
            position = {}
            for i, name in enumerate(names):
                if name in position and name in self.joints:
                    raise self._error(f"names joint {name!r} twice")
                position[name] = i
            missing = [joint for joint in self.joints if joint not in position]
            if missing:
                raise self._error(f"lacks joints {missing} (message has {list(names)})")
            index = np.array([position[joint] for joint in self.joints], dtype=np.intp)
            self._index_cache[names] = index
        return index

    def select(self, names: tuple[str, ...], values: np.ndarray) -> np.ndarray:
        """The contract's joints out of `values`, whose last axis follows `names`."""
        if values.shape[-1] != len(names):
            raise self._error(f"has {values.shape[-1]} {self.field} values for {len(names)} joint names")
        return values[..., self.joint_indices(names)]

    def values(self, msg: Any) -> np.ndarray:
        return self.select(tuple(msg.name), np.asarray(getattr(msg, self.field), dtype=np.float64))

    def _own_dict(self) -> dict:
        fields = {"field": self.field, "joints": list(self.joints)}
        if self.sources:
            fields["sources"] = [{"topic": source.topic, "joints": list(source.joints)} for source in self.sources]
        return fields


@dataclass(frozen=True, kw_only=True)
class PoseObservation(ObservationSpec):
    """geometry_msgs/PoseStamped: position (xyz), orientation (xyzw) or pose (xyz + xyzw)."""

    field: str

    def values(self, msg: Any) -> np.ndarray:
        return select_pose_field(msg.pose.position, msg.pose.orientation, self.field)

    def _own_dict(self) -> dict:
        return {"field": self.field}


@dataclass(frozen=True, kw_only=True)
class ArrayObservation(ObservationSpec):
    """std_msgs/Float64MultiArray with exactly `size` values."""

    def values(self, msg: Any) -> np.ndarray:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != self.shape:
            raise self._error(f"has {len(data)} values, the contract says size {self.shape[0]}")
        return data

    def _own_dict(self) -> dict:
        return {"size": self.shape[0]}


@dataclass(frozen=True, kw_only=True)
class ImageObservation(ObservationSpec):
    """sensor_msgs/Image (rgb8, bgr8, mono8; row padding per `step`) -> (H, W, C) uint8, row 0 on top.

    Stored as rgb8 (C=3) or mono8 (C=1); mono8 messages are replicated to rgb8 when asked, colour
    messages are never turned grey. `fit` crops and resizes to the policy's size
    (mvp_ros.data.images); without `resize` the size must match the contract.
    """

    fit: ImageFit
    dtype: ClassVar[np.dtype] = np.dtype(np.uint8)

    @property
    def encoding(self) -> str:
        return self.fit.encoding

    def values(self, msg: Any) -> np.ndarray:
        try:
            return self.fit(raw_pixels(msg.encoding, int(msg.width), int(msg.height), int(msg.step), msg.data),
                            msg.encoding.lower())
        except ValueError as error:
            raise self._error(str(error)) from None

    def _own_dict(self) -> dict:
        return {"image": self.fit.to_dict()}


@dataclass(frozen=True, kw_only=True)
class CompressedImageObservation(ImageObservation):
    """sensor_msgs/CompressedImage holding a JPEG or PNG (8-bit grey or colour), decoded with OpenCV
    as its `format` says (mvp_ros.data.images.compressed_layout)."""

    def values(self, msg: Any) -> np.ndarray:
        try:
            return self.fit(*decode_compressed(msg.format, msg.data))
        except ValueError as error:
            raise self._error(str(error)) from None


@dataclass(frozen=True, kw_only=True)
class TransformObservation(ObservationSpec):
    """The pose of child_frame in parent_frame, composed from /tf and /tf_static.

    Bags: composed through the frame tree by mvp_ros.data.bag2hdf5. Live: look it up with
    tf2_ros (`buffer.lookup_transform(parent_frame, child_frame, time)`) and pass the resulting
    geometry_msgs/TransformStamped to `extract`.
    """

    parent_frame: str
    child_frame: str
    field: str

    def values(self, msg: Any) -> np.ndarray:
        return select_pose_field(msg.transform.translation, msg.transform.rotation, self.field)

    def _own_dict(self) -> dict:
        return {"parent_frame": self.parent_frame, "child_frame": self.child_frame, "field": self.field}


POSE_FIELD_SIZES = {"position": 3, "orientation": 4, "pose": 7}


def select_pose_field(position: Any, orientation: Any, field_name: str) -> np.ndarray:
    """xyz, xyzw or both from a Point/Vector3 and a Quaternion."""
    xyz = [position.x, position.y, position.z]
    xyzw = [orientation.x, orientation.y, orientation.z, orientation.w]
    values = {"position": xyz, "orientation": xyzw, "pose": xyz + xyzw}[field_name]
    return np.array(values, dtype=np.float64)


@dataclass(frozen=True, kw_only=True)
class ActionSpec(StreamSpec):
    """The command topic: Float64MultiArray (dims named by `names`) or JointTrajectory (first
    point's positions of the joints `names`, matched by name), with limits and a safe action."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_delta: np.ndarray | None = None
    safe_rule: str = "hold"
    safe_value: np.ndarray | None = None  # rule constant: the action to send
    safe_zero: tuple[str, ...] = ()  # rule hold: dims set to zero (e.g. delta motion)
    safe_initial: tuple[tuple[str, float], ...] = ()  # rule hold: (name, value) held before any command was sent
    chunk: bool = False  # JointTrajectory: the remaining chunk, a point per control period
    time_from_start_s: float | None = None  # JointTrajectory, one point: its time_from_start (default one period)
    relative_to: str | None = None  # a JointState position key: the command sent is its measured value + the action
    outputs: tuple[ActionSpec, ...] = ()  # several command topics, each a slice of `names` with its own fields
    key: str = "action"  # an output: action[<index>]

    def streams(self) -> tuple[ActionSpec, ...]:
        return self.outputs or (self,)

    def slices(self) -> list[slice]:
        """Where each of `streams()` sits in the action vector."""
        ends = np.cumsum([len(stream.names) for stream in self.streams()]).tolist()
        return [slice(end - len(stream.names), end) for stream, end in zip(self.streams(), ends)]

    def assemble(self, values: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(values, axis=-1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActionSpec) and self.to_dict() == other.to_dict()

    @property
    def shape(self) -> tuple[int]:
        return (len(self.names),)

    def values(self, msg: Any) -> np.ndarray:
        if self.msgtype == "trajectory_msgs/msg/JointTrajectory":
            return self._trajectory_values(msg)
        data = np.asarray(msg.data, dtype=np.float64)
        if len(data) != len(self.names):
            raise MessageError(f"action: {self.topic} has {len(data)} values for {len(self.names)} names")
        return data

    def _trajectory_values(self, msg: Any) -> np.ndarray:
        if not msg.points:
            raise MessageError(f"action: {self.topic} JointTrajectory has no points")
        names = list(msg.joint_names)
        missing = [name for name in self.names if name not in names]
        if missing:
            raise MessageError(f"action: {self.topic} JointTrajectory lacks joints {missing} (it has {names})")
        positions = np.asarray(msg.points[0].positions, dtype=np.float64)
        if len(positions) != len(names):
            raise MessageError(
                f"action: {self.topic} JointTrajectory point has {len(positions)} positions for {len(names)} joints"
            )
        return positions[[names.index(name) for name in self.names]]

    def safe_action(self, previous: np.ndarray | None, measured: dict[str, float] | None = None) -> np.ndarray | None:
        """What to send instead of the policy's action.

        `constant`: the contract's value. `hold`: the dims in `zero` are 0; every other dim keeps
        `previous` (the last command sent), or, with no previous command, the robot's `measured`
        position of the joint of that name, else the contract's `initial` value. None when a dim has
        none of these (there is no safe command to send). With outputs, each output's own rule.
        """
        if self.outputs:
            parts = [output.safe_action(None if previous is None else previous[part], measured)
                     for output, part in zip(self.outputs, self.slices())]
            return None if any(part is None for part in parts) else np.concatenate(parts)
        if self.safe_rule == "constant":
            return self.safe_value.copy()
        if previous is not None:
            held = np.array(previous, dtype=np.float64)
        else:
            known = dict(self.safe_initial) | (measured or {})
            if any(name not in known for name in self.names if name not in self.safe_zero):
                return None
            held = np.array([known.get(name, 0.0) for name in self.names], dtype=np.float64)
        held[[self.names.index(name) for name in self.safe_zero]] = 0.0
        return held

    def unsafe_dims_without_command(self, measurable: tuple[str, ...] = ()) -> list[str]:
        """Names that `hold` cannot fill before a first command: not zeroed, not in `initial`, and not
        among the `measurable` joint names."""
        if self.outputs:
            return [name for output in self.outputs for name in output.unsafe_dims_without_command(measurable)]
        if self.safe_rule == "constant":
            return []
        known = {name for name, _ in self.safe_initial} | set(self.safe_zero) | set(measurable)
        return [name for name in self.names if name not in known]

    def to_dict(self) -> dict:
        if self.outputs:
            return {"outputs": [output.to_dict() for output in self.outputs]}
        fields = self._common_dict() | {
            "names": list(self.names),
            "limits": {"lower": self.lower.tolist(), "upper": self.upper.tolist()},
        }
        if self.max_delta is not None:
            fields["max_delta"] = self.max_delta.tolist()
        safe: dict[str, Any] = {"rule": self.safe_rule}
        if self.safe_rule == "constant":
            safe["value"] = self.safe_value.tolist()
        else:
            if self.safe_zero:
                safe["zero"] = list(self.safe_zero)
            if self.safe_initial:
                safe["initial"] = dict(self.safe_initial)
        fields["safe_action"] = safe
        if self.relative_to is not None:
            fields["relative_to"] = self.relative_to
        if self.chunk:
            fields["trajectory"] = {"mode": "chunk"}
        elif self.time_from_start_s is not None:
            fields["trajectory"] = {"mode": "point", "time_from_start_s": self.time_from_start_s}
        return fields


@dataclass(frozen=True)
class Contract:
    """A validated contract. Build with `load_contract(path)` or `Contract.from_dict(d)`."""

    robot: str
    control_rate_hz: float
    observations: dict[str, ObservationSpec]
    action: ActionSpec
    description: str = ""

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.control_rate_hz)

    def topics(self) -> dict[str, str]:
        """Every topic the contract reads or writes -> its ROS 2 type (incl. /tf, /tf_static)."""
        topics: dict[str, str] = {}
        for spec in self.observations.values():
            if isinstance(spec, TransformObservation):
                topics.update(TF_TOPICS)
            topics.update({stream.topic: stream.msgtype for stream in spec.streams()})
        topics.update({stream.topic: stream.msgtype for stream in self.action.streams()})
        return topics

    def to_dict(self) -> dict:
        contract = {"contract_version": CONTRACT_VERSION, "robot": self.robot}
        if self.description:
            contract["description"] = self.description
        contract["control_rate_hz"] = self.control_rate_hz
        contract["observations"] = {key: spec.to_dict() for key, spec in self.observations.items()}
        contract["action"] = self.action.to_dict()
        return contract

    @classmethod
    def from_dict(cls, data: Any, source: str = "contract") -> Contract:
        """Validate a contract mapping; ContractError names `source` and the offending key."""
        return _parse_contract(data, source)


def load_contract(path: str | Path) -> Contract:
    """Read and validate a contract YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ContractError(f"{path}: cannot read contract ({error.strerror or error})") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ContractError(f"{path}: not valid YAML ({error})") from error
    return Contract.from_dict(data, source=str(path))


# ---- validation: YAML mapping -> Contract ------------------------------------------------------

_REQUIRED = object()
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HEADERLESS_TYPES = ("std_msgs/msg/Float64MultiArray",)
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
_ACTION_TYPES = ("std_msgs/msg/Float64MultiArray", TRAJECTORY)
TRAJECTORY_MODES = ("point", "chunk")
_JOINT_FIELDS = ("position", "velocity", "effort")


class _Section:
    """One mapping of the contract under validation; errors name the file and the key path."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        self.path, self.source = path, source
        if not isinstance(data, dict):
            raise self.error(f"expected a mapping, got {type(data).__name__} {data!r}")
        self.data = dict(data)
        self.known: list[str] = []

    def error(self, what: str, name: str | None = None) -> ContractError:
        where = ".".join(part for part in (self.path, name) if part) or "(top level)"
        return ContractError(f"{self.source}: {where}: {what}")

    def take(self, name: str, default: Any = _REQUIRED) -> Any:
        self.known.append(name)
        if name in self.data:
            return self.data.pop(name)
        if default is _REQUIRED:
            raise self.error("missing (required)", name)
        return default

    def section(self, name: str, default: Any = _REQUIRED) -> _Section:
        value = self.take(name, default)
        return _Section(value, ".".join(part for part in (self.path, name) if part), self.source)

    def text(self, name: str, default: Any = _REQUIRED, choices: tuple[str, ...] | None = None) -> str:
        value = self.take(name, default)
        if not isinstance(value, str) or not value:
            raise self.error(f"must be a non-empty string, got {value!r}", name)
        if choices is not None and value not in choices:
            raise self.error(f"is {value!r}; expected one of {list(choices)}", name)
        return value

    def number(self, name: str, default: Any = _REQUIRED) -> float | None:
        """A finite number > 0 (or the default, which may be None)."""
        value = self.take(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise self.error(f"must be a positive number, got {value!r}", name)
        return float(value)

    def integer(self, name: str, default: Any = _REQUIRED, minimum: int = 1) -> int:
        value = self.take(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise self.error(f"must be a {kind} integer, got {value!r}", name)
        return value

    def names(self, name: str, default: Any = _REQUIRED) -> tuple[str, ...]:
        if name not in self.data and default is not _REQUIRED:
            self.known.append(name)
            return tuple(default)
        value = self.take(name)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(f"must be a non-empty list of names, got {value!r}", name)
        duplicates = sorted({v for v in value if value.count(v) > 1})
        if duplicates:
            raise self.error(f"lists {duplicates} more than once", name)
        return tuple(value)

    def floats(self, name: str, length: int, default: Any = _REQUIRED) -> np.ndarray | None:
        value = self.take(name, default)
        if value is None and default is None:
            return None
        if (
            not isinstance(value, list)
            or len(value) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        ):
            raise self.error(f"must be a list of {length} finite numbers (one per action name), got {value!r}", name)
        return np.array(value, dtype=np.float64)

    def finish(self) -> None:
        if self.data:
            raise self.error(f"unknown field(s) {sorted(self.data)}; expected some of {self.known}")


def _normalize_type(section: _Section) -> str:
    """'sensor_msgs/JointState' and 'sensor_msgs/msg/JointState' both become the latter."""
    msgtype = section.text("type")
    parts = msgtype.split("/")
    if msgtype == "tf":
        return msgtype
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and parts[1] == "msg":
        return msgtype
    raise section.error(f"{msgtype!r} is not a message type like 'sensor_msgs/msg/JointState'", "type")


def _parse_stream(
    section: _Section, msgtype: str, rules: tuple[str, ...], default_align: Alignment, default_stamp: str
) -> dict:
    """The fields every stream has: topic, align, stamp, max_age_s."""
    topic = None
    if msgtype != "tf" and "sources" not in section.data:
        topic = section.text("topic")
        if not topic.startswith("/"):
            raise section.error(f"{topic!r} must be an absolute topic name like '/{topic}'", "topic")
    align = default_align
    if "align" in section.data:
        align_section = section.section("align")
        rule = align_section.text("rule", choices=rules)
        tolerance = align_section.number("tolerance_s", None)
        if rule == "hold" and tolerance is not None:
            raise align_section.error("rule hold takes no tolerance; bound the age with max_age_s", "tolerance_s")
        if rule != "hold" and tolerance is None:
            raise align_section.error(f"rule {rule} needs a tolerance", "tolerance_s")
        align_section.finish()
        align = Alignment(rule, tolerance)
    has_header = msgtype not in _HEADERLESS_TYPES
    stamp_source = section.text("stamp", default_stamp if has_header else "receive", choices=STAMP_SOURCES)
    if stamp_source == "header" and not has_header:
        raise section.error(f"{msgtype} has no header; use stamp: receive", "stamp")
    return {"topic": topic, "msgtype": msgtype, "align": align, "stamp_source": stamp_source,
            "max_age_s": section.number("max_age_s", None)}


def _parse_observation(section: _Section, key: str, period_s: float) -> ObservationSpec:
    if not _KEY_PATTERN.match(key):
        raise section.error("observation keys may hold only letters, digits, '_', '.', '-'")
    msgtype = _normalize_type(section)
    if msgtype == "tf" and "topic" in section.data:
        raise section.error("a tf source reads /tf and /tf_static; remove the topic", "topic")
    common = _parse_stream(section, msgtype, ("asof", "hold"), Alignment("asof", period_s), "header")
    common["key"] = key
    if msgtype == "sensor_msgs/msg/JointState":
        joints = section.names("joints")
        joint_field = section.text("field", "position", _JOINT_FIELDS)
        sources = _parse_sources(section, joints, joint_field, common) if "sources" in section.data else ()
        spec = JointStateObservation(field=joint_field, joints=joints, sources=sources, shape=(len(joints),), **common)
    elif msgtype in ("geometry_msgs/msg/PoseStamped", "tf"):
        pose_field = section.text("field", "pose", tuple(POSE_FIELD_SIZES))
        shape = (POSE_FIELD_SIZES[pose_field],)
        if msgtype == "tf":
            parent = section.text("parent_frame").lstrip("/")
            child = section.text("child_frame").lstrip("/")
            if parent == child:
                raise section.error(f"parent_frame and child_frame are both {parent!r}", "child_frame")
            spec = TransformObservation(parent_frame=parent, child_frame=child, field=pose_field, shape=shape, **common)
        else:
            spec = PoseObservation(field=pose_field, shape=shape, **common)
    elif msgtype == "std_msgs/msg/Float64MultiArray":
        spec = ArrayObservation(shape=(section.integer("size"),), **common)
    elif msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
        fit = _parse_image(section.section("image"))
        image_class = ImageObservation if msgtype.endswith("/Image") else CompressedImageObservation
        spec = image_class(fit=fit, shape=(fit.height, fit.width, CHANNELS[fit.encoding]), **common)
    else:
        supported = ["sensor_msgs/msg/JointState", "geometry_msgs/msg/PoseStamped", "std_msgs/msg/Float64MultiArray",
                     "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "tf"]
        raise section.error(f"{msgtype!r} is not supported; supported: {supported}", "type")
    section.finish()
    return spec


def _parse_sources(section: _Section, joints: tuple[str, ...], joint_field: str, common: dict
                   ) -> tuple[JointStateObservation, ...]:
    """`sources`: [{topic, joints}, ...], each joint of the key in exactly one source; a source is a
    JointStateObservation of its own (key `<key>[<index>]`) sharing the key's field, alignment and limits."""
    if "topic" in section.data:
        raise section.error("give either topic or sources, not both", "sources")
    listed = section.take("sources")
    if not isinstance(listed, list) or len(listed) < 2:
        raise section.error(f"must list at least two sources ({{topic, joints}}), got {listed!r}", "sources")
    sources, owner = [], {}
    for index, entry in enumerate(listed):
        source = _Section(entry, f"{section.path}.sources[{index}]", section.source)
        topic = source.text("topic")
        if not topic.startswith("/"):
            raise source.error(f"{topic!r} must be an absolute topic name like '/{topic}'", "topic")
        source_joints = source.names("joints")
        source.finish()
        for joint in source_joints:
            if joint not in joints:
                raise source.error(f"{joint!r} is not one of the key's joints {list(joints)}", "joints")
            if joint in owner:
                raise source.error(f"{joint!r} is also in sources[{owner[joint]}]", "joints")
            owner[joint] = index
        key = f"{common['key']}[{index}]"
        sources.append(JointStateObservation(**(common | {"topic": topic, "key": key}), field=joint_field,
                                             joints=source_joints, shape=(len(source_joints),), partial=True))
    missing = [joint for joint in joints if joint not in owner]
    if missing:
        raise section.error(f"no source publishes {missing}", "sources")
    return tuple(sources)


def _parse_image(image: _Section) -> ImageFit:
    width, height = image.integer("width"), image.integer("height")
    encoding = image.text("encoding", "rgb8", IMAGE_ENCODINGS)
    crop = None
    if "crop" in image.data:
        section = image.section("crop")
        crop = Crop(section.integer("x", 0, minimum=0), section.integer("y", 0, minimum=0), section.integer("width"),
                    section.integer("height"))
        section.finish()
    resize = image.take("resize", None)
    if resize is not None and resize not in RESIZE_INTERPOLATIONS:
        raise image.error(f"is {resize!r}; expected one of {list(RESIZE_INTERPOLATIONS)} (the interpolation)", "resize")
    image.finish()
    return ImageFit(width, height, encoding, crop, resize)


def _parse_action(section: _Section, period_s: float) -> ActionSpec:
    if "outputs" not in section.data:
        return _parse_output(section, period_s)
    listed = section.take("outputs")
    section.finish()
    if not isinstance(listed, list) or len(listed) < 2:
        raise section.error(f"must list at least two outputs (each a command topic), got {listed!r}", "outputs")
    outputs = [dataclasses.replace(_parse_output(_Section(entry, f"action.outputs[{index}]", section.source), period_s),
                                   key=f"action[{index}]") for index, entry in enumerate(listed)]
    seen_names: dict[str, int] = {}
    seen_topics: dict[str, int] = {}
    for index, output in enumerate(outputs):
        where = _Section({}, f"action.outputs[{index}]", section.source)
        for name in output.names:
            if seen_names.setdefault(name, index) != index:
                raise where.error(f"{name!r} is also a name of outputs[{seen_names[name]}]", "names")
        if seen_topics.setdefault(output.topic, index) != index:
            raise where.error(f"{output.topic} is also the topic of outputs[{seen_topics[output.topic]}]", "topic")
    deltas = [output.max_delta for output in outputs]
    max_delta = None if all(delta is None for delta in deltas) else np.concatenate(
        [np.full(len(output.names), np.inf) if delta is None else delta for output, delta in zip(outputs, deltas)])
    first = outputs[0]
    return ActionSpec(
        topic=None, msgtype="outputs", align=first.align, stamp_source=first.stamp_source, outputs=tuple(outputs),
        names=tuple(name for output in outputs for name in output.names),
        lower=np.concatenate([output.lower for output in outputs]),
        upper=np.concatenate([output.upper for output in outputs]), max_delta=max_delta)


def _parse_output(section: _Section, period_s: float) -> ActionSpec:
    msgtype = _normalize_type(section)
    if msgtype not in _ACTION_TYPES:
        raise section.error(f"{msgtype!r} is not supported for actions; supported: {list(_ACTION_TYPES)}", "type")
    common = _parse_stream(section, msgtype, ALIGN_RULES, Alignment("next", period_s), "receive")
    names = section.names("names")
    limits = section.section("limits")
    lower, upper = limits.floats("lower", len(names)), limits.floats("upper", len(names))
    limits.finish()
    if (lower > upper).any():
        bad = [name for name, low, high in zip(names, lower, upper) if low > high]
        raise limits.error(f"lower is above upper for {bad}")
    max_delta = section.floats("max_delta", len(names), None)
    if max_delta is not None and (max_delta <= 0).any():
        raise section.error("entries must be > 0", "max_delta")
    safe = section.section("safe_action", {"rule": "hold"})
    rule = safe.text("rule", choices=("hold", "constant"))
    value, zero, initial = None, (), ()
    if rule == "constant":
        value = safe.floats("value", len(names))
        if ((value < lower) | (value > upper)).any():
            raise safe.error("lies outside the action limits", "value")
    else:
        zero = safe.names("zero", ())
        unknown = [name for name in zero if name not in names]
        if unknown:
            raise safe.error(f"names {unknown}, which are not action names {list(names)}", "zero")
        initial = _initial_values(safe, names, lower, upper)
    safe.finish()
    trajectory = _parse_trajectory(section.section("trajectory", {}), period_s) if msgtype == TRAJECTORY else {}
    relative_to = section.take("relative_to", None)
    if relative_to is not None and not isinstance(relative_to, str):
        raise section.error(f"must name an observation key, got {relative_to!r}", "relative_to")
    section.finish()
    return ActionSpec(names=names, lower=lower, upper=upper, max_delta=max_delta, safe_rule=rule, **trajectory,
                      relative_to=relative_to,
                      safe_value=value, safe_zero=zero, safe_initial=initial, **common)


def _parse_trajectory(section: _Section, period_s: float) -> dict:
    """trajectory: {mode: point, time_from_start_s: S} (default: one control period) or {mode: chunk}."""
    mode = section.text("mode", "point", TRAJECTORY_MODES)
    time_from_start_s = section.number("time_from_start_s", None)
    if mode == "chunk" and time_from_start_s is not None:
        raise section.error("mode chunk times its points by the control period; remove time_from_start_s",
                            "time_from_start_s")
    section.finish()
    return {"chunk": mode == "chunk", "time_from_start_s": time_from_start_s}


def _initial_values(safe: _Section, names: tuple[str, ...], lower: np.ndarray, upper: np.ndarray
                    ) -> tuple[tuple[str, float], ...]:
    """safe_action.initial: {name: value}, each an action name with a finite value inside its limits."""
    initial = safe.take("initial", {})
    if not isinstance(initial, dict):
        raise safe.error(f"must map action names to values, got {initial!r}", "initial")
    pairs = []
    for name, number in initial.items():
        if name not in names:
            raise safe.error(f"{name!r} is not an action name {list(names)}", "initial")
        index = names.index(name)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not lower[index] <= number <= upper[index]:
            raise safe.error(f"{name}: must be a number within [{lower[index]:g}, {upper[index]:g}], got {number!r}",
                             "initial")
        pairs.append((name, float(number)))
    return tuple(pairs)


def _parse_contract(data: Any, source: str) -> Contract:
    root = _Section(data, "", source)
    version = root.take("contract_version")
    if version != CONTRACT_VERSION:
        raise root.error(f"is {version!r}; this mvp_ros reads version {CONTRACT_VERSION}", "contract_version")
    robot = root.text("robot")
    description = root.take("description", "")
    rate = root.number("control_rate_hz")
    observations_section = root.section("observations")
    if not observations_section.data:
        raise root.error("needs at least one observation key", "observations")
    observations = {
        str(key): _parse_observation(observations_section.section(key), str(key), 1.0 / rate)
        for key in list(observations_section.data)
    }
    # A topic that several publishers share (joint sources): another key reading it takes only the
    # messages carrying its joints, and lets the other publishers' messages pass.
    shared = {stream.topic for spec in observations.values() for stream in spec.streams() if stream.partial}
    for key, spec in observations.items():
        if isinstance(spec, JointStateObservation) and not spec.sources and spec.topic in shared:
            observations[key] = dataclasses.replace(spec, partial=True)
    action = _parse_action(root.section("action"), 1.0 / rate)
    root.finish()
    contract = Contract(robot, rate, observations, action, str(description))
    _check_topic_types(contract, source)
    outputs = action.streams()
    for index, output in enumerate(outputs):
        if output.relative_to is not None:
            _check_relative(output, contract, f"{source}: action{f'.outputs[{index}]' if len(outputs) > 1 else ''}")
    return contract


def _check_relative(output: ActionSpec, contract: Contract, where: str) -> None:
    """relative_to names a JointState position key measuring every name of the output, and the safe
    action sends 0 for them (the measured position: holding a nonzero offset would keep moving)."""
    spec = contract.observations.get(output.relative_to)
    if not isinstance(spec, JointStateObservation) or spec.field != "position":
        raise ContractError(f"{where}.relative_to: {output.relative_to!r} is not a JointState observation key with"
                            " field position")
    missing = [name for name in output.names if name not in spec.joints]
    if missing:
        raise ContractError(f"{where}.relative_to: {output.relative_to} does not measure {missing}")
    if output.chunk:
        raise ContractError(f"{where}.trajectory: a relative output cannot send its chunk ahead (each offset is from"
                            " the position measured at its own tick, not known yet): use mode point")
    if output.safe_rule == "constant" and np.any(output.safe_value != 0):
        raise ContractError(f"{where}.safe_action.value: a relative output's safe value is 0 (stay where measured)")
    if output.safe_rule == "hold" and set(output.safe_zero) != set(output.names):
        raise ContractError(f"{where}.safe_action.zero: a relative output holds by sending 0 (stay where measured):"
                            f" list all of {list(output.names)}")


def _check_topic_types(contract: Contract, source: str) -> None:
    """A topic carries one type: two keys that disagree about it are a contract error."""
    seen: dict[str, tuple[str, str]] = {}
    streams = [(f"observations.{key}" + (f".sources[{index}]" if len(spec.streams()) > 1 else ""), stream)
               for key, spec in contract.observations.items() for index, stream in enumerate(spec.streams())]
    outputs = contract.action.streams()
    streams += [("action" + (f".outputs[{index}]" if len(outputs) > 1 else ""), stream)
                for index, stream in enumerate(outputs)]
    for where, spec in streams:
        if spec.topic in TF_TOPICS:
            raise ContractError(f"{source}: {where}.topic: {spec.topic} is read by tf sources (type: tf)")
        other = seen.setdefault(spec.topic, (spec.key, spec.msgtype))
        if other[1] != spec.msgtype:
            raise ContractError(
                f"{source}: {where}.type: {spec.topic} is {spec.msgtype} here but {other[1]} for {other[0]}"
            )
        if spec.key.startswith("action") and not other[0].startswith("action"):
            raise ContractError(f"{source}: {where}.topic: {spec.topic} is also the observation {other[0]}'s topic")
