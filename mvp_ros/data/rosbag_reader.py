"""Reading a rosbag2 bag (sqlite3 or MCAP, compressed or not) into per-key samples of a contract.

Every message goes through the contract's extractors (mvp_ros.data.contract), except
sensor_msgs/JointState, the high-rate topic: those are decoded in batches straight from the CDR
bytes with numpy (`decode_joint_states`), checked against the typestore's decoding, and then go
through the same joint-selection code. Samples keep bag order; sorting and resampling happen in
mvp_ros.data.bag2hdf5.
"""
from __future__ import annotations

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
    JointStateObservation,
    MessageError,
    StreamSpec,
    TransformObservation,
    stamp_ns,
)

JOINT_STATE = "sensor_msgs/msg/JointState"
_JOINT_FIELDS = ("position", "velocity", "effort")
_BATCH_SIZE = 65536  # JointState messages decoded at once (bounds memory for long bags)
_FOUR_BYTES = np.arange(4)


class BagError(RuntimeError):
    """A bag can't be converted; the message names the bag and, where known, the topic."""


def default_typestore() -> Typestore:
    return get_typestore(Stores.ROS2_KILTED)


@dataclass
class Samples:
    """One contract key's samples from one bag, in bag order."""

    stamps: np.ndarray  # int64 ns
    values: np.ndarray  # (n, *shape)
    invalid: int = 0  # messages dropped for NaN/inf
    first_invalid: str = ""

    @property
    def read(self) -> int:
        return len(self.stamps) + self.invalid


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
    samples: dict[str, Samples]  # observation keys (not tf ones) and "action"
    transforms: Transforms
    markers: np.ndarray  # receive times (ns) of the split topic's messages
    message_counts: dict[str, int]  # topic -> messages read


class _Collector:
    """Gathers one key's stamps and values, then drops non-finite rows with a count."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.stamps: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def add(self, stamps: np.ndarray, values: np.ndarray) -> None:
        self.stamps.append(stamps)
        self.values.append(values)

    def finish(self) -> Samples:
        stamps = np.concatenate(self.stamps) if self.stamps else np.zeros(0, dtype=np.int64)
        values = np.concatenate(self.values) if self.values else np.zeros((0, *self.spec.shape))
        if values.dtype.kind != "f":
            return Samples(stamps, values)
        finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if finite.all():
            return Samples(stamps, values)
        first = int(np.flatnonzero(~finite)[0])
        example = f"stamp {stamps[first]} ns: {values[first].tolist()}"
        return Samples(stamps[finite], values[finite], int((~finite).sum()), example)


class _Topic:
    """Receives one topic's raw messages; subclasses decode them."""

    def __init__(self, bag: Path, topic: str, msgtype: str, typestore: Typestore) -> None:
        self.bag, self.topic, self.msgtype, self.typestore = bag, topic, msgtype, typestore
        self.count = 0

    def deserialize(self, raw: bytes, receive_ns: int) -> Any:
        try:
            return self.typestore.deserialize_cdr(raw, self.msgtype)
        except Exception as error:  # rosbags raises assorted errors on bad CDR bytes
            raise self.error(f"cannot be decoded as {self.msgtype} ({type(error).__name__}: {error})", receive_ns)

    def error(self, what: str, receive_ns: int, index: int | None = None) -> BagError:
        index = self.count if index is None else index
        return BagError(f"{self.bag}: {self.topic}: message {index} (receive time {receive_ns} ns) {what}")

    def add(self, raw: bytes, receive_ns: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once after the last message."""


class _MessageTopic(_Topic):
    """Deserializes each message with the typestore and runs every key's extractor on it."""

    def __init__(self, bag: Path, topic: str, msgtype: str, typestore: Typestore, collectors: list[_Collector]):
        super().__init__(bag, topic, msgtype, typestore)
        self.collectors = collectors
        self.rows: list[tuple[list[int], list[np.ndarray]]] = [([], []) for _ in collectors]

    def add(self, raw: bytes, receive_ns: int) -> None:
        message = self.deserialize(raw, receive_ns)
        for collector, (stamps, values) in zip(self.collectors, self.rows):
            try:
                values.append(collector.spec.values(message))
            except MessageError as error:
                raise self.error(f"does not fit the contract: {error}", receive_ns) from error
            stamps.append(collector.spec.stamp(message, receive_ns))
        self.count += 1

    def finish(self) -> None:
        for collector, (stamps, values) in zip(self.collectors, self.rows):
            if values:
                collector.add(np.array(stamps, dtype=np.int64), np.stack(values))


class _JointStateTopic(_Topic):
    """Buffers raw JointState messages and decodes them in batches (see decode_joint_states)."""

    def __init__(self, bag: Path, topic: str, typestore: Typestore, collectors: list[_Collector]):
        super().__init__(bag, topic, JOINT_STATE, typestore)
        self.collectors = collectors
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
        batches = decode_joint_states(self.raws, self.typestore, self._decode_error(receive))
        for collector in self.collectors:
            spec: JointStateObservation = collector.spec
            stamps = np.empty(len(receive), dtype=np.int64)
            values = np.empty((len(receive), len(spec.joints)))
            for batch in batches:
                try:
                    values[batch.rows] = spec.select(batch.names, batch.fields[spec.field])
                except MessageError as error:
                    row = int(batch.rows[0])
                    raise self.error(f"does not fit the contract: {error}", int(receive[row]), self.count + row) from error
                by_header = spec.stamp_source == "header"
                stamps[batch.rows] = batch.header_stamps if by_header else receive[batch.rows]
            collector.add(stamps, values)
        self.count += len(self.raws)
        self.raws, self.receive = [], []

    def _decode_error(self, receive: np.ndarray):
        return lambda row, what: self.error(what, int(receive[row]), self.count + row)


class _TransformTopic(_Topic):
    def __init__(self, bag: Path, topic: str, typestore: Typestore, transforms: Transforms):
        super().__init__(bag, topic, TF_TOPICS[topic], typestore)
        self.transforms, self.static = transforms, topic == "/tf_static"

    def add(self, raw: bytes, receive_ns: int) -> None:
        out = self.transforms
        for transform in self.deserialize(raw, receive_ns).transforms:
            translation, rotation = transform.transform.translation, transform.transform.rotation
            out.parents.append(transform.header.frame_id.lstrip("/"))
            out.children.append(transform.child_frame_id.lstrip("/"))
            out.header_stamps.append(stamp_ns(transform.header.stamp))
            out.receive_stamps.append(receive_ns)
            out.poses.append([translation.x, translation.y, translation.z, rotation.x, rotation.y, rotation.z, rotation.w])
            out.static.append(self.static)
        self.count += 1


class _MarkerTopic(_Topic):
    """Only the receive times of the split topic's messages matter; they are not decoded."""

    def __init__(self, bag: Path, topic: str, msgtype: str, typestore: Typestore):
        super().__init__(bag, topic, msgtype, typestore)
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


def _check_topics(reader: Reader, path: Path, contract: Contract, split_topic: str | None) -> dict[str, str]:
    """The bag's topics the conversion reads -> their types; BagError for missing or mistyped ones."""
    in_bag = {connection.topic: connection.msgtype for connection in reader.connections}
    wanted = contract.topics()
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
    return needed


def read_bag(path: Path, contract: Contract, typestore: Typestore, split_topic: str | None = None) -> BagContents:
    """All samples the contract needs from one bag. BagError names the bag and topic of any problem."""
    reader = open_bag(path)
    try:
        topics = _check_topics(reader, path, contract, split_topic)
        collectors = {key: _Collector(spec) for key, spec in contract.observations.items()
                      if not isinstance(spec, TransformObservation)}
        collectors["action"] = _Collector(contract.action)
        transforms = Transforms()
        handlers = {}
        for topic, msgtype in topics.items():
            on_topic = [c for c in collectors.values() if c.spec.topic == topic]
            if topic == split_topic and not on_topic:
                handlers[topic] = _MarkerTopic(path, topic, msgtype, typestore)
            elif topic in TF_TOPICS:
                handlers[topic] = _TransformTopic(path, topic, typestore, transforms)
            elif msgtype == JOINT_STATE:
                handlers[topic] = _JointStateTopic(path, topic, typestore, on_topic)
            else:
                handlers[topic] = _MessageTopic(path, topic, msgtype, typestore, on_topic)
        _read_messages(reader, path, handlers)
    finally:
        reader.close()
    markers = handlers.get(split_topic)
    return BagContents(
        path=path,
        samples={key: collector.finish() for key, collector in collectors.items()},
        transforms=transforms,
        markers=np.array(getattr(markers, "times", []), dtype=np.int64),
        message_counts={topic: handler.count for topic, handler in handlers.items()},
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
        except BagError:
            raise
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


def decode_joint_states(raws: list[bytes], typestore: Typestore, error) -> list[JointStateBatch]:
    """Decode many sensor_msgs/JointState CDR messages at once.

    A vectorized walk over the CDR layout finds each message's joint-name block and float arrays;
    messages with identical name blocks and lengths form a batch whose floats are gathered with one
    numpy index. The first message of every batch is also decoded by the typestore and the batch is
    used only if both decodings agree bit for bit; otherwise, and for big-endian or malformed
    messages, each message is decoded by the typestore. `error(row, what)` builds the exception
    for an undecodable message.
    """
    walk = _CdrWalk(raws)
    batches, fallback = [], np.flatnonzero(~walk.ok).tolist()
    for rows in walk.layout_groups(raws):
        try:
            batch = walk.batch(rows)
            trusted = _agrees(batch, typestore.deserialize_cdr(raws[rows[0]], JOINT_STATE))
        except Exception:  # undecodable names or bytes: the one-by-one path reports the error
            trusted = False
        if trusted:
            batches.append(batch)
        else:
            fallback.extend(rows.tolist())
    return batches + _decode_one_by_one(raws, sorted(fallback), typestore, error)


def _agrees(batch: JointStateBatch, message: Any) -> bool:
    same_floats = all(
        np.array_equal(batch.fields[name][0].view(np.uint64), np.asarray(getattr(message, name)).view(np.uint64))
        for name in _JOINT_FIELDS
    )
    return same_floats and batch.names == tuple(message.name) and batch.header_stamps[0] == stamp_ns(message.header.stamp)


def _decode_one_by_one(raws: list[bytes], rows: list[int], typestore: Typestore, error) -> list[JointStateBatch]:
    batches: dict[tuple, list] = {}
    for row in rows:
        try:
            message = typestore.deserialize_cdr(raws[row], JOINT_STATE)
        except Exception as exception:  # rosbags raises assorted errors on bad CDR bytes
            raise error(row, f"cannot be decoded as {JOINT_STATE} ({type(exception).__name__}: {exception})")
        arrays = [np.asarray(getattr(message, name), dtype=np.float64) for name in _JOINT_FIELDS]
        key = (tuple(message.name), *(len(a) for a in arrays))
        batches.setdefault(key, []).append((row, stamp_ns(message.header.stamp), arrays))
    return [
        JointStateBatch(
            rows=np.array([row for row, _, _ in members]),
            names=key[0],
            header_stamps=np.array([stamp for _, stamp, _ in members], dtype=np.int64),
            fields={name: np.stack([arrays[i] for _, _, arrays in members]) for i, name in enumerate(_JOINT_FIELDS)},
        )
        for key, members in batches.items()
    ]


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
