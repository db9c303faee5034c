"""Reading a rosbag2 bag (sqlite3 or MCAP, compressed or not) into per-key samples of a contract.

Every message goes through the contract's `extract` (mvp_ros.data.contract), the code the live
policy node runs, except sensor_msgs/JointState, the high-rate topic: those are decoded in
batches straight from the CDR bytes with numpy (`decode_joint_states`), checked against the
typestore's decoding, and go through the same joint selection and NaN check; any message that
fails there, or that the batch decoder leaves out, goes through `extract` one by one.

A message that does not fit the contract is dropped whole, for every key read from its topic, and
counted under its topic by the live node's reason: `non_finite` (NaN or inf where the contract
reads) or `malformed` (anything else `extract` rejects, or bytes that cannot be decoded). Samples
keep bag order; sorting and resampling happen in mvp_ros.data.bag2hdf5, so the node's
`out_of_order` drop does not apply: a late message takes its place by stamp.

Camera frames, once decoded, cropped and resized, go to a temporary file (`FrameFile`) and are
read back a block at a time when the episodes are written, so memory does not grow with the number
of images; the other keys' samples (tens of bytes each) stay in memory.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from mvp_ros.data.contract import (
    TF_TOPICS,
    Contract,
    ImageObservation,
    JointStateObservation,
    MessageError,
    NonFiniteError,
    StreamSpec,
    TransformObservation,
    stamp_ns,
)
from mvp_ros.data.robomimic import BlockArray

JOINT_STATE = "sensor_msgs/msg/JointState"
DROP_REASONS = ("non_finite", "malformed")  # the live policy node's names for these rejects
_JOINT_FIELDS = ("position", "velocity", "effort")
_BATCH_SIZE = 65536  # JointState messages decoded at once (bounds memory for long bags)
_FOUR_BYTES = np.arange(4)


class BagError(RuntimeError):
    """A bag can't be converted; the message names the bag and, where known, the topic."""


def default_typestore() -> Typestore:
    return get_typestore(Stores.ROS2_KILTED)


class FrameFile:
    """One camera key's frames (all of one shape, uint8) in a temporary file, in the order appended."""

    def __init__(self, frame_shape: tuple[int, ...]) -> None:
        self.frame_shape = tuple(frame_shape)
        self.frame_bytes = int(np.prod(frame_shape))
        self.count = 0
        self._file = tempfile.TemporaryFile(prefix="mvp_bag2hdf5_frames_")  # deleted when closed

    def append(self, frame: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.count += 1

    def frames(self) -> Frames:
        self._file.flush()
        return Frames(self, np.arange(self.count))

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.frame_shape), dtype=np.uint8)
        descriptor = self._file.fileno()
        for index, row in enumerate(rows.tolist()):
            data = os.pread(descriptor, self.frame_bytes, row * self.frame_bytes)
            out[index] = np.frombuffer(data, dtype=np.uint8).reshape(self.frame_shape)
        return out


class Frames(BlockArray):
    """Rows of a FrameFile, read only when sliced (a block at a time by write_robomimic)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, file: FrameFile, rows: np.ndarray) -> None:
        self.file, self.rows = file, rows
        self.shape = (len(rows), *file.frame_shape)

    def select(self, index: np.ndarray) -> Frames:
        """The frames at `index` (integer or boolean), still unread."""
        return Frames(self.file, self.rows[index])

    def __getitem__(self, steps: slice) -> np.ndarray:
        return self.file.read(self.rows[steps])


def select_rows(values: np.ndarray | Frames, index: np.ndarray) -> np.ndarray | Frames:
    """values[index], leaving camera frames on disk."""
    return values.select(index) if isinstance(values, Frames) else values[index]


@dataclass
class Samples:
    """One contract key's samples from one bag, in bag order."""

    stamps: np.ndarray  # int64 ns
    values: np.ndarray | Frames  # (n, *shape)


@dataclass
class Dropped:
    """One topic's dropped messages: how many per reason, and what was wrong with the first of each."""

    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, what)


def describe_drops(counts: Counter[str], first: dict[str, str] | None = None) -> str:
    """'2 non_finite, 1 malformed', each with its first example when `first` is given."""
    return ", ".join(f"{counts[reason]} {reason}" + (f" (first: {first[reason]})" if first else "")
                     for reason in DROP_REASONS if counts[reason])


@dataclass
class Transforms:
    """Every TransformStamped of /tf and /tf_static, in bag order."""

    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    header_stamps: list[int] = field(default_factory=list)
    receive_stamps: list[int] = field(default_factory=list)
    poses: list[list[float]] = field(default_factory=list)  # x y z qx qy qz qw
    static: list[bool] = field(default_factory=list)


@dataclass
class BagContents:
    path: Path
    samples: dict[str, Samples]  # per stream key: observation keys (not tf ones) or their sources, the action or its outputs
    transforms: Transforms
    markers: np.ndarray  # receive times (ns) of the split topic's messages
    message_counts: dict[str, int]  # topic -> messages read
    dropped: dict[str, Dropped]  # topic -> messages dropped, by reason


class _Collector:
    """Gathers one key's stamps and values."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.stamps: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def add(self, stamps: np.ndarray, values: np.ndarray) -> None:
        self.stamps.append(stamps)
        self.values.append(values)

    def finish(self) -> Samples:
        """Called only for keys whose topic had usable messages."""
        if len(self.values) == 1:  # one block (every topic but JointState): no copy
            return Samples(self.stamps[0], self.values[0])
        return Samples(np.concatenate(self.stamps), np.concatenate(self.values))


class _Topic:
    """Receives one topic's raw messages; subclasses decode them."""

    def __init__(self, topic: str, msgtype: str, typestore: Typestore) -> None:
        self.topic, self.msgtype, self.typestore = topic, msgtype, typestore
        self.count = 0
        self.dropped = Dropped()

    def deserialize(self, raw: bytes, receive_ns: int, index: int) -> Any | None:
        """The message, or None when its bytes cannot be decoded (dropped as malformed)."""
        try:
            return self.typestore.deserialize_cdr(raw, self.msgtype)
        except Exception as error:  # rosbags raises assorted errors on bad CDR bytes
            what = f"cannot be decoded as {self.msgtype} ({type(error).__name__}: {error})"
            self.drop("malformed", what, receive_ns, index)
            return None

    def drop(self, reason: str, what: str, receive_ns: int, index: int) -> None:
        self.dropped.add(reason, f"message {index} (receive time {receive_ns} ns) {what}")

    def add(self, raw: bytes, receive_ns: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once after the last message."""


class _ContractTopic(_Topic):
    """A topic the contract's keys read: each message is accepted for all of them or dropped."""

    def __init__(self, topic: str, msgtype: str, typestore: Typestore, collectors: list[_Collector]):
        super().__init__(topic, msgtype, typestore)
        self.collectors = collectors

    def extract(self, raw: bytes, receive_ns: int, index: int) -> list[tuple[int, np.ndarray] | None] | None:
        """Each key's (stamp, value) from one message, as the live node extracts them (None for a key
        whose source the message is not from); None if dropped."""
        message = self.deserialize(raw, receive_ns, index)
        if message is None:
            return None
        applies = [collector.spec.applies(message) for collector in self.collectors]
        if not any(applies):
            keys = [collector.spec.key for collector in self.collectors]
            self.drop("malformed", f"does not fit the contract: {self.topic}: the message carries none of the joints of"
                      f" {keys}", receive_ns, index)
            return None
        try:
            return [(collector.spec.stamp(message, receive_ns), collector.spec.extract(message)) if applied else None
                    for collector, applied in zip(self.collectors, applies)]
        except MessageError as error:
            reason = "non_finite" if isinstance(error, NonFiniteError) else "malformed"
            self.drop(reason, f"does not fit the contract: {error}", receive_ns, index)
            return None

    @property
    def accepted(self) -> int:
        return self.count - sum(self.dropped.counts.values())


class _MessageTopic(_ContractTopic):
    """Deserializes each message with the typestore and runs every key's extractor on it; a camera
    key's frames go to a FrameFile."""

    def __init__(self, topic: str, msgtype: str, typestore: Typestore, collectors: list[_Collector]):
        super().__init__(topic, msgtype, typestore, collectors)
        self.rows: list[tuple[list[int], list[np.ndarray] | FrameFile]] = [
            ([], FrameFile(collector.spec.shape) if isinstance(collector.spec, ImageObservation) else [])
            for collector in collectors]

    def add(self, raw: bytes, receive_ns: int) -> None:
        samples = self.extract(raw, receive_ns, self.count)
        for (stamps, values), sample in zip(self.rows, samples or []):
            if sample is not None:
                stamps.append(sample[0])
                values.append(sample[1])
        self.count += 1

    def finish(self) -> None:
        for collector, (stamps, values) in zip(self.collectors, self.rows):
            if stamps:
                frames = values.frames() if isinstance(values, FrameFile) else np.stack(values)
                collector.add(np.array(stamps, dtype=np.int64), frames)


class _JointStateTopic(_ContractTopic):
    """Buffers raw JointState messages and decodes them in batches (see decode_joint_states)."""

    def __init__(self, topic: str, typestore: Typestore, collectors: list[_Collector]):
        super().__init__(topic, JOINT_STATE, typestore, collectors)
        self.raws: list[bytes] = []
        self.receive: list[int] = []

    def add(self, raw: bytes, receive_ns: int) -> None:
        self.raws.append(raw)
        self.receive.append(receive_ns)
        if len(self.raws) == _BATCH_SIZE:
            self.finish()

    def finish(self) -> None:
        if not self.raws:
            return
        receive = np.array(self.receive, dtype=np.int64)
        batches = decode_joint_states(self.raws, self.typestore)
        # Rows the batches leave out, or that fail the contract there, are decided by `extract` one by one.
        one_by_one = np.ones(len(receive), dtype=bool)
        for batch in batches:
            one_by_one[batch.rows] = False
        columns = []  # per collector: stamps, values, and whether each message carries its joints
        for collector in self.collectors:
            spec: JointStateObservation = collector.spec
            stamps = np.zeros(len(receive), dtype=np.int64)
            values = np.zeros((len(receive), len(spec.joints)))
            carries = np.ones(len(receive), dtype=bool)
            for batch in batches:
                if not spec.applies_to_names(batch.names):
                    carries[batch.rows] = False
                    continue
                try:
                    values[batch.rows] = spec.select(batch.names, batch.fields[spec.field])
                except MessageError:
                    one_by_one[batch.rows] = True
                stamps[batch.rows] = batch.header_stamps if spec.stamp_source == "header" else receive[batch.rows]
            one_by_one |= carries & ~np.isfinite(values).all(axis=1)
            columns.append((stamps, values, carries))
        one_by_one |= ~np.logical_or.reduce([carries for _, _, carries in columns])
        accepted = ~one_by_one
        for row in np.flatnonzero(one_by_one).tolist():
            samples = self.extract(self.raws[row], int(receive[row]), self.count + row)
            accepted[row] = samples is not None
            for (stamps, values, carries), sample in zip(columns, samples or [None] * len(columns)):
                carries[row] = sample is not None
                if sample is not None:
                    stamps[row], values[row] = sample
        for collector, (stamps, values, carries) in zip(self.collectors, columns):
            collector.add(stamps[accepted & carries], values[accepted & carries])
        self.count += len(self.raws)
        self.raws, self.receive = [], []


class _TransformTopic(_Topic):
    def __init__(self, topic: str, typestore: Typestore, transforms: Transforms):
        super().__init__(topic, TF_TOPICS[topic], typestore)
        self.transforms, self.static = transforms, topic == "/tf_static"

    def add(self, raw: bytes, receive_ns: int) -> None:
        message = self.deserialize(raw, receive_ns, self.count)
        self.count += 1
        if message is None:
            return
        out = self.transforms
        for transform in message.transforms:
            translation, rotation = transform.transform.translation, transform.transform.rotation
            out.parents.append(transform.header.frame_id.lstrip("/"))
            out.children.append(transform.child_frame_id.lstrip("/"))
            out.header_stamps.append(stamp_ns(transform.header.stamp))
            out.receive_stamps.append(receive_ns)
            out.poses.append([translation.x, translation.y, translation.z, rotation.x, rotation.y, rotation.z, rotation.w])
            out.static.append(self.static)


class _MarkerTopic(_Topic):
    """Only the receive times of the split topic's messages matter; they are not decoded."""

    def __init__(self, topic: str, msgtype: str, typestore: Typestore):
        super().__init__(topic, msgtype, typestore)
        self.times: list[int] = []

    def add(self, raw: bytes, receive_ns: int) -> None:
        self.times.append(receive_ns)
        self.count += 1


def open_bag(path: Path) -> Reader:
    """Open a bag directory (or a lone .mcap/.db3 file); BagError if it can't be read."""
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # ReaderError, sqlite3/mcap/yaml errors: all mean "unreadable bag"
        raise BagError(f"{path}: cannot open bag, corrupted or truncated? ({type(error).__name__}: {error})") from error
    return reader


def check_bag(path: Path, contract: Contract, split_topic: str | None = None) -> None:
    """BagError if the bag can't be opened, is empty, or lacks messages on a topic the conversion reads."""
    reader = open_bag(path)
    try:
        _check_topics(reader, path, contract, split_topic)
    finally:
        reader.close()


def _check_topics(reader: Reader, path: Path, contract: Contract, split_topic: str | None) -> dict[str, str]:
    """The bag's topics the conversion reads -> their types; BagError for missing, mistyped or empty ones."""
    in_bag = {connection.topic: connection.msgtype for connection in reader.connections}
    wanted = contract.topics()
    if reader.message_count == 0:
        raise BagError(f"{path}: empty bag: no messages on any topic (the contract reads {sorted(wanted)})")
    if any(topic in TF_TOPICS for topic in wanted) and not any(topic in in_bag for topic in TF_TOPICS):
        tf_keys = [key for key, spec in contract.observations.items() if isinstance(spec, TransformObservation)]
        raise BagError(f"{path}: neither /tf nor /tf_static is in the bag (needed by {tf_keys}); it has {sorted(in_bag)}")
    needed = {topic: msgtype for topic, msgtype in wanted.items() if topic not in TF_TOPICS or topic in in_bag}
    if split_topic is not None:
        if split_topic not in in_bag:
            raise BagError(f"{path}: split topic {split_topic} is not in the bag; it has {sorted(in_bag)}")
        needed[split_topic] = in_bag[split_topic]
    for topic, msgtype in needed.items():
        if topic not in in_bag:
            raise BagError(f"{path}: topic {topic} ({msgtype}) is not in the bag; it has {sorted(in_bag)}")
        types = {c.msgtype for c in reader.connections if c.topic == topic}
        if types != {msgtype}:
            raise BagError(f"{path}: topic {topic} is {' and '.join(sorted(types))} in the bag, the contract reads {msgtype}")
    streams = {**contract.observations, "action": contract.action}
    for topic in wanted:
        if topic not in TF_TOPICS and sum(c.msgcount for c in reader.connections if c.topic == topic) == 0:
            keys = [key for key, spec in streams.items() if spec.topic == topic]
            raise _unusable_topic(path, topic, keys, 0, Dropped())
    return needed


def _unusable_topic(path: Path, topic: str, keys: list[str], read: int, dropped: Dropped) -> BagError:
    if read == 0:
        return BagError(f"{path}: {topic}: no messages in the bag (the contract reads {keys} from it)")
    return BagError(f"{path}: {topic}: no usable message for {keys}: all {read} dropped, "
                    f"{describe_drops(dropped.counts, dropped.first)}")


def read_bag(path: Path, contract: Contract, typestore: Typestore, split_topic: str | None = None) -> BagContents:
    """All samples the contract needs from one bag. BagError names the bag and topic of any problem."""
    reader = open_bag(path)
    try:
        topics = _check_topics(reader, path, contract, split_topic)
        specs = [*contract.observations.values(), contract.action]
        collectors = {stream.key: _Collector(stream) for spec in specs for stream in spec.streams()}
        transforms = Transforms()
        handlers = {}
        for topic, msgtype in topics.items():
            on_topic = [c for c in collectors.values() if c.spec.topic == topic]
            if topic == split_topic and not on_topic:
                handlers[topic] = _MarkerTopic(topic, msgtype, typestore)
            elif topic in TF_TOPICS:
                handlers[topic] = _TransformTopic(topic, typestore, transforms)
            elif msgtype == JOINT_STATE:
                handlers[topic] = _JointStateTopic(topic, typestore, on_topic)
            else:
                handlers[topic] = _MessageTopic(topic, msgtype, typestore, on_topic)
        _read_messages(reader, path, handlers)
    finally:
        reader.close()
    for handler in handlers.values():
        if isinstance(handler, _ContractTopic) and handler.accepted == 0:
            keys = [collector.spec.key for collector in handler.collectors]
            raise _unusable_topic(path, handler.topic, keys, handler.count, handler.dropped)
        for collector in getattr(handler, "collectors", []):
            if not collector.stamps or not sum(map(len, collector.stamps)):
                raise BagError(f"{path}: {handler.topic}: no usable message carries the joints"
                               f" {list(collector.spec.joints)} of {collector.spec.key}")
    markers = handlers.get(split_topic)
    return BagContents(
        path=path,
        samples={key: collector.finish() for key, collector in collectors.items()},
        transforms=transforms,
        markers=np.array(getattr(markers, "times", []), dtype=np.int64),
        message_counts={topic: handler.count for topic, handler in handlers.items()},
        dropped={topic: handler.dropped for topic, handler in handlers.items()},
    )


def _read_messages(reader: Reader, path: Path, handlers: dict[str, _Topic]) -> None:
    connections = [c for c in reader.connections if c.topic in handlers]
    routes = {c.id: handlers[c.topic].add for c in connections}
    total = sum(c.msgcount for c in connections)
    current = "(no message read yet)"
    with tqdm(total=total, desc=path.name, unit="msg", unit_scale=True, disable=None, leave=False) as progress:
        try:
            for count, (connection, receive_ns, raw) in enumerate(reader.messages(connections), 1):
                current = connection.topic
                routes[connection.id](raw, receive_ns)
                if count % 8192 == 0:
                    progress.update(8192)
            for handler in handlers.values():
                current = handler.topic
                handler.finish()
        except Exception as error:  # storage errors surface mid-iteration in a truncated/corrupted bag
            raise BagError(
                f"{path}: reading failed at topic {current}, corrupted or truncated bag? ({type(error).__name__}: {error})"
            ) from error


# ---- batched JointState decoding -----------------------------------------------------------------


@dataclass
class JointStateBatch:
    """JointState messages sharing joint names, frame_id and array lengths."""

    rows: np.ndarray  # positions in the decoded list
    names: tuple[str, ...]
    header_stamps: np.ndarray  # int64 ns
    fields: dict[str, np.ndarray]  # position / velocity / effort -> (n, length)


def decode_joint_states(raws: list[bytes], typestore: Typestore) -> list[JointStateBatch]:
    """Decode many sensor_msgs/JointState CDR messages at once.

    A vectorized walk over the CDR layout finds each message's joint-name block and float arrays;
    messages with identical name blocks and lengths form a batch whose floats are gathered with one
    numpy index. The first message of every batch is also decoded by the typestore and the batch is
    used only if both decodings agree bit for bit. Big-endian or malformed messages, and batches
    that disagree, are left out: the caller decodes those one by one.
    """
    walk = _CdrWalk(raws)
    batches = []
    for rows in walk.layout_groups(raws):
        try:
            batch = walk.batch(rows)
            if _agrees(batch, typestore.deserialize_cdr(raws[rows[0]], JOINT_STATE)):
                batches.append(batch)
        except Exception:  # undecodable names or bytes: left to the one-by-one path, which reports them
            continue
    return batches


def _agrees(batch: JointStateBatch, message: Any) -> bool:
    same_floats = all(
        np.array_equal(batch.fields[name][0].view(np.uint64), np.asarray(getattr(message, name)).view(np.uint64))
        for name in _JOINT_FIELDS
    )
    return same_floats and batch.names == tuple(message.name) and batch.header_stamps[0] == stamp_ns(message.header.stamp)


class _CdrWalk:
    """Offsets of every field of many little-endian JointState CDR messages, computed with numpy.

    CDR aligns each primitive to its size, counted from the end of the 4-byte encapsulation
    header; strings and sequences start with a uint32 length. Float64 arrays are 8-aligned
    (no padding when empty). `ok` is False for messages that are big-endian or don't fit.
    """

    def __init__(self, raws: list[bytes]) -> None:
        lengths = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
        self.buffer = np.frombuffer(b"".join(raws) + bytes(8), dtype=np.uint8)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.ends = self.starts + lengths
        self.origin = self.starts + 4
        self.ok = lengths >= 20
        self.ok[self.ok] &= self.buffer[self.starts[self.ok] + 1] == 1  # little-endian flag
        position = self._aligned(self._string_end(self.origin + 8), 4)  # after header.stamp, frame_id
        names = self._u32(position)
        self.ok &= names <= lengths // 4
        position = position + 4
        for index in range(int(names[self.ok].max(initial=0))):
            active = index < names
            position = np.where(self.ok & active, self._string_end(position, active), position)
        self.names_end = position
        self.offsets, self.counts = {}, {}
        for name in _JOINT_FIELDS:
            count_at = self._aligned(position, 4)
            count = self._u32(count_at)
            self.ok &= count <= lengths // 8
            data = np.where(count > 0, self._aligned(count_at + 4, 8), count_at + 4)
            self.ok &= data + 8 * count <= self.ends
            self.offsets[name], self.counts[name] = data, count
            position = data + 8 * count

    def _aligned(self, position: np.ndarray, size: int) -> np.ndarray:
        return self.origin + -(-(position - self.origin) // size) * size

    def _u32(self, position: np.ndarray, active: np.ndarray | np.bool_ = np.True_) -> np.ndarray:
        """uint32 at each position; active rows where it would run past the message lose ok."""
        self.ok &= ~active | (position + 4 <= self.ends)
        safe = np.where(self.ok & active, position, 0)
        return self.buffer[safe[:, None] + _FOUR_BYTES].copy().view("<u4")[:, 0].astype(np.int64)

    def _string_end(self, position: np.ndarray, active: np.ndarray | np.bool_ = np.True_) -> np.ndarray:
        start = self._aligned(position, 4)
        return start + 4 + self._u32(start, active)

    def layout_groups(self, raws: list[bytes]) -> list[np.ndarray]:
        """Rows of the ok messages grouped by frame_id, joint names and array lengths."""
        rows = np.flatnonzero(self.ok)
        name_ends = (self.names_end[rows] - self.starts[rows]).tolist()
        blocks = [bytes(raws[row][12:end]) for row, end in zip(rows.tolist(), name_ends)]
        codes_of = {block: code for code, block in enumerate(dict.fromkeys(blocks))}
        codes = np.fromiter(map(codes_of.__getitem__, blocks), dtype=np.int64, count=len(blocks))
        keys = np.stack([codes, *(self.counts[name][rows] for name in _JOINT_FIELDS)])
        order = np.lexsort(keys[::-1])
        splits = np.flatnonzero((np.diff(keys[:, order], axis=1) != 0).any(axis=0)) + 1
        return [rows[group] for group in np.split(order, splits)] if len(rows) else []

    def batch(self, rows: np.ndarray) -> JointStateBatch:
        origin = self.origin[rows]
        seconds = self.buffer[origin[:, None] + _FOUR_BYTES].copy().view("<i4")[:, 0].astype(np.int64)
        nanoseconds = self.buffer[origin[:, None] + 4 + _FOUR_BYTES].copy().view("<u4")[:, 0].astype(np.int64)
        fields = {}
        for name in _JOINT_FIELDS:
            width = 8 * int(self.counts[name][rows[0]])
            block = self.buffer[self.offsets[name][rows][:, None] + np.arange(width)]
            fields[name] = block.view("<f8").astype(np.float64) if width else np.zeros((len(rows), 0))
        names = _decode_names(self.buffer, int(self.origin[rows[0]]), int(self.names_end[rows[0]]))
        return JointStateBatch(rows, names, seconds * 1_000_000_000 + nanoseconds, fields)


def _decode_names(buffer: np.ndarray, origin: int, names_end: int) -> tuple[str, ...]:
    """The joint names of one message (its name block decoded with plain Python)."""
    raw = buffer[origin:names_end].tobytes()
    frame_length = int.from_bytes(raw[8:12], "little")
    position = -(-(12 + frame_length) // 4) * 4
    count = int.from_bytes(raw[position : position + 4], "little")
    position += 4
    names = []
    for _ in range(count):
        position = -(-position // 4) * 4
        length = int.from_bytes(raw[position : position + 4], "little")
        names.append(raw[position + 4 : position + 3 + length].decode("utf-8"))
        position += 4 + length
    return tuple(names)
