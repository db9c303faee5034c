"""`mvp bag2hdf5`: rosbag2 bags -> Robomimic-format HDF5, through an observation contract.

Every stream of the contract is resampled on one grid per bag at the contract's control rate:

- The grid starts when every observation stream has a sample and steps by the control period
  until a stream runs out (its last sample plus its age limit; for `next`, its last sample).
- At each tick, each stream takes a sample by its rule (asof / hold / next, see
  mvp_ros.data.contract.Alignment). A tick where any stream has no sample within its limit is
  dropped, and the episode is split there: consecutive steps are always one period apart.
- A relative output's commands (contract `relative_to`) are stored as offsets: the command minus
  the tick's sample of its observation key, the inverse of what the live node sends.
- One bag is one episode, unless split on a marker topic (`--split-topic`: ticks at or after
  each message's receive time go to a new episode) or on pauses of the action stream
  (`--split-gap`: a tick goes to the episode of the command it takes).

What is written, per episode, is what Robomimic's algorithms read: `obs`, `actions`, `next_obs` (the
observation of the next step; at the last step, which has no next one in the episode, the last
observation again), `dones` (int, 1 at the last step), `rewards` (zeros: a bag holds no reward),
and the masks `train` and `valid`. Camera frames stay on disk until they are written, a block at a
time (mvp_ros.data.rosbag_reader.FrameFile), so memory does not grow with the bag's length.

Messages are dropped as the live policy node drops them, by the same contract code
(mvp_ros.data.rosbag_reader): a message that does not fit the contract is dropped whole, for every
key of its topic, and counted by the node's reason: `non_finite` (NaN/inf) or `malformed` (missing
joint, corrupt or wrong-size image, wrong encoding, undecodable bytes, ...). One bad message never
stops a bag.

Per bag it prints, for each key: messages read, used, skipped (not the sample at any kept tick:
higher rate than the control rate, outside the episode, or at a dropped tick), dropped by reason,
and stale ticks (ticks where the key had no sample within tolerance); then, per topic, the first
dropped message of each reason. At the end it prints the same counts summed over all bags.
Nothing is dropped silently.

Every bag is opened and checked (readable, not empty, messages on every contract topic) before
anything is written. A bad bag stops the run with its name and the reason, and no output file is
left; so does one found bad while it is read (every message of a topic dropped, streams that never
overlap). With --skip-bad-bags such bags are skipped instead and listed, with the reason, in the
summary and in the file attribute `skipped_bags`; `source_bags` lists the converted ones.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mvp_ros import __version__
from mvp_ros.data.contract import (
    ContractError,
    Contract,
    StreamSpec,
    TransformObservation,
    load_contract,
)
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.data.rosbag_reader import (
    DROP_REASONS,
    BagContents,
    BagError,
    Dropped,
    Frames,
    Transforms,
    check_bag,
    default_typestore,
    describe_drops,
    read_bag,
    select_rows,
)

NO_TICKS = np.zeros(0, dtype=np.int64)


@dataclass
class Selection:
    """Which sample each tick takes, and whether it is within the stream's limit."""

    valid: np.ndarray  # bool per tick
    indices: list[np.ndarray]  # per underlying series, sample index per tick


class Series:
    """One stream's samples sorted by stamp (of equal stamps the last received wins)."""

    def __init__(self, stamps: np.ndarray, values: np.ndarray | Frames, rule: str, limit_ns: float,
                 static: bool = False):
        self.static = static  # a latched /tf_static transform: valid at every time
        if np.all(stamps[1:] > stamps[:-1]):  # the usual case: kept as is
            self.stamps, self.values = stamps, values
        else:
            order = np.argsort(stamps, kind="stable")
            stamps = stamps[order]
            last_of_equal = np.append(stamps[1:] != stamps[:-1], True)
            self.stamps, self.values = stamps[last_of_equal], select_rows(values, order[last_of_equal])
        self.rule, self.limit_ns = rule, limit_ns
        self.used = np.zeros(len(self.stamps), dtype=bool)

    def lookup(self, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sample index, valid) per tick."""
        last = len(self.stamps) - 1
        if self.rule == "next":
            index = np.searchsorted(self.stamps, ticks, side="left")
            valid = index <= last
            index = np.minimum(index, last)
            age = self.stamps[index] - ticks
        else:
            index = np.searchsorted(self.stamps, ticks, side="right") - 1
            valid = index >= 0
            index = np.maximum(index, 0)
            age = ticks - self.stamps[index]
        return index, valid & (age <= self.limit_ns)

    def take(self, index: np.ndarray) -> np.ndarray | Frames:
        self.used[index] = True
        return select_rows(self.values, index)


class Stream:
    """A contract key resampled from one bag: a topic's samples, or a chain of transforms."""

    def __init__(self, key: str, topic: str, spec: StreamSpec, parts: list[Series], read: int, dropped: Counter[str],
                 compose: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> None:
        self.key, self.topic, self.spec, self.parts = key, topic, spec, parts
        self.read, self.dropped = read, dropped  # messages, and those dropped by reason
        self.compose = compose or (lambda values: values[0])
        self.dynamic = [part for part in parts if not part.static]
        self.first_stamp = max((part.stamps[0] for part in self.dynamic), default=-np.inf)
        self.last_stamp = min((part.stamps[-1] for part in self.dynamic), default=np.inf)

    @property
    def end_bound(self) -> float:
        """The last time at which this stream can still serve a tick."""
        return self.last_stamp + (0 if self.spec.align.rule == "next" else self.spec.age_limit_s() * 1e9)

    def select(self, ticks: np.ndarray) -> Selection:
        lookups = [part.lookup(ticks) for part in self.parts]
        return Selection(np.logical_and.reduce([valid for _, valid in lookups]), [index for index, _ in lookups])

    def take(self, selection: Selection, ticks: np.ndarray) -> np.ndarray | Frames:
        """Values at the given tick positions (marking their samples used); camera frames unread."""
        return self.compose([part.take(index[ticks]) for part, index in zip(self.parts, selection.indices)])

    @property
    def used(self) -> int:
        return int(sum(part.used.sum() for part in self.parts))


def _topic_stream(key: str, spec: StreamSpec, contents: BagContents) -> Stream:
    """A key read from its topic, or assembled from its streams (joint sources, action outputs), each
    resampled on its own: a tick needs every stream within its limit."""
    streams = spec.streams()
    series = [Series(contents.samples[stream.key].stamps, contents.samples[stream.key].values, stream.align.rule,
                     stream.age_limit_s() * 1e9) for stream in streams]
    topics = list(dict.fromkeys(stream.topic for stream in streams))
    dropped = sum((contents.dropped[topic].counts for topic in topics), Counter())
    return Stream(key, "+".join(topics), spec, series, sum(contents.message_counts[topic] for topic in topics), dropped,
                  compose=spec.assemble)


# ---- transforms -----------------------------------------------------------------------------------


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], axis=-1)


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def _compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Poses (xyz + xyzw): first * second."""
    return np.concatenate([first[..., :3] + _rotate(first[..., 3:], second[..., :3]),
                           _quat_multiply(first[..., 3:], second[..., 3:])], axis=-1)


def _invert(pose: np.ndarray) -> np.ndarray:
    conjugate = pose[..., 3:] * np.array([-1.0, -1.0, -1.0, 1.0])
    return np.concatenate([-_rotate(conjugate, pose[..., :3]), conjugate], axis=-1)


def _frame_parents(transforms: Transforms, bag: Path) -> dict[str, str]:
    parents: dict[str, str] = {}
    for parent, child in zip(transforms.parents, transforms.children):
        if parents.setdefault(child, parent) != parent:
            raise BagError(f"{bag}: /tf: frame {child!r} has two parents, {parents[child]!r} and {parent!r}")
    return parents


def _path_to_root(frame: str, parents: dict[str, str]) -> list[str]:
    path = [frame]
    while path[-1] in parents and parents[path[-1]] not in path:
        path.append(parents[path[-1]])
    return path


def _transform_stream(key: str, spec: TransformObservation, transforms: Transforms, bag: Path) -> Stream:
    """The pose of spec.child_frame in spec.parent_frame: T(parent<-common) ^-1 * T(common<-child)."""
    parents = _frame_parents(transforms, bag)
    up_from_child = _path_to_root(spec.child_frame, parents)
    up_from_parent = _path_to_root(spec.parent_frame, parents)
    common = next((frame for frame in up_from_child if frame in up_from_parent), None)
    if common is None:
        frames = sorted(set(parents) | set(parents.values()))
        raise BagError(f"{bag}: /tf, /tf_static: no chain of transforms from {spec.parent_frame!r} to "
                       f"{spec.child_frame!r} for {key} (frames in the bag: {frames})")
    child_edges = up_from_child[: up_from_child.index(common)]
    parent_edges = up_from_parent[: up_from_parent.index(common)]
    stamps = np.array(transforms.header_stamps if spec.stamp_source == "header" else transforms.receive_stamps,
                      dtype=np.int64)
    poses = np.array(transforms.poses, dtype=np.float64).reshape(-1, 7)
    norms = np.linalg.norm(poses[:, 3:], axis=1, keepdims=True)
    poses[:, 3:] /= np.where(norms > 0, norms, np.nan)
    children, static = np.array(transforms.children), np.array(transforms.static, dtype=bool)
    finite = np.isfinite(poses).all(axis=1)
    parts, read, invalid = [], 0, 0
    for child in child_edges + parent_edges:
        on_edge = children == child
        if on_edge.any() and static[on_edge].any() and not static[on_edge].all():
            raise BagError(f"{bag}: frame {child!r} is published on both /tf and /tf_static")
        read += int(on_edge.sum())
        invalid += int((on_edge & ~finite).sum())
        usable = on_edge & finite
        if not usable.any():
            raise BagError(f"{bag}: /tf: every transform to frame {child!r} (needed by {key}) has NaN/inf")
        if static[on_edge].all():  # latched: the last one holds at all times
            last = np.flatnonzero(usable)[-1]
            parts.append(Series(np.zeros(1, dtype=np.int64), poses[[last]], "hold", np.inf, static=True))
        else:
            parts.append(Series(stamps[usable], poses[usable], spec.align.rule, spec.age_limit_s() * 1e9))
    split = len(child_edges)

    def compose(values: list[np.ndarray]) -> np.ndarray:
        def chain(edges: list[np.ndarray]) -> np.ndarray:  # edges ordered child-most first
            pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (len(values[0]), 1))
            for edge in reversed(edges):
                pose = _compose(pose, edge)
            return pose

        pose = _compose(_invert(chain(values[split:])), chain(values[:split]))
        return _pose_field(pose, spec.field)

    return Stream(key, "/tf+/tf_static", spec, parts, read, Counter(non_finite=invalid), compose=compose)


def _pose_field(pose: np.ndarray, field: str) -> np.ndarray:
    return {"position": pose[:, :3], "orientation": pose[:, 3:], "pose": pose}[field]


# ---- episodes -----------------------------------------------------------------------------------


@dataclass
class KeyCounts:
    """One key's row in the conversion summary."""

    key: str
    topic: str
    read: int  # messages (for a tf key: transforms on its chain of frames)
    used: int  # samples taken at kept ticks
    dropped: Counter[str]  # reason -> messages dropped
    stale: int  # ticks without a sample within the key's limit

    @property
    def skipped(self) -> int:
        return self.read - self.used - sum(self.dropped.values())

    def __add__(self, other: KeyCounts) -> KeyCounts:
        return KeyCounts(self.key, self.topic, self.read + other.read, self.used + other.used,
                         self.dropped + other.dropped, self.stale + other.stale)


def _table(rows: list[KeyCounts]) -> list[str]:
    width = max(len(row.key) for row in rows)
    topic_width = max(len(row.topic) for row in rows)
    reasons = " ".join(f"{reason:>10}" for reason in DROP_REASONS)
    lines = [f"  {'key':<{width}}  {'topic':<{topic_width}}  {'read':>8} {'used':>8} {'skipped':>8} {reasons} "
             f"{'stale ticks':>11}"]
    for row in rows:
        dropped = " ".join(f"{row.dropped[reason]:>10}" for reason in DROP_REASONS)
        lines.append(f"  {row.key:<{width}}  {row.topic:<{topic_width}}  {row.read:>8} {row.used:>8} "
                     f"{row.skipped:>8} {dropped} {row.stale:>11}")
    return lines


def _dropped_line(topic: str, counts: Counter[str], first: dict[str, str] | None = None) -> str:
    return f"  {topic}: dropped {sum(counts.values())} message(s): {describe_drops(counts, first)}"


@dataclass
class BagReport:
    path: Path
    rate_hz: float
    ticks: int
    kept: int
    episodes: int
    keys: list[KeyCounts]
    dropped: dict[str, Dropped]  # topic -> messages dropped whole

    def lines(self) -> list[str]:
        stale = ", ".join(f"{row.key} stale at {row.stale}" for row in self.keys if row.stale)
        lines = [f"{self.path}: {self.ticks} ticks at {self.rate_hz:g} Hz, kept {self.kept} in {self.episodes} "
                 f"episode(s); {self.ticks - self.kept} dropped{' (' + stale + ')' if stale else ''}"]
        lines += _table(self.keys)
        lines += [_dropped_line(topic, dropped.counts, dropped.first)
                  for topic, dropped in self.dropped.items() if dropped.counts]
        return lines


@dataclass
class ConversionSummary:
    """A report per converted bag, and the bags skipped (--skip-bad-bags) with the reason."""

    reports: list[BagReport] = field(default_factory=list)
    source_bags: list[str] = field(default_factory=list)
    skipped_bags: list[dict[str, str]] = field(default_factory=list)  # {"bag": ..., "reason": ...}

    @property
    def episodes(self) -> int:
        return sum(report.episodes for report in self.reports)

    def add(self, report: BagReport) -> None:
        self.reports.append(report)
        self.source_bags.append(str(report.path))

    def skip(self, bag: Path, error: BagError) -> str:
        """Record a skipped bag; the line to log."""
        reason = str(error).removeprefix(f"{bag}: ")
        self.skipped_bags.append({"bag": str(bag), "reason": reason})
        return f"skipped {bag}: {reason}"

    def lines(self) -> list[str]:
        ticks, kept = sum(report.ticks for report in self.reports), sum(report.kept for report in self.reports)
        lines = [f"total: {len(self.reports)} bag(s) converted, {len(self.skipped_bags)} skipped; "
                 f"kept {kept} of {ticks} ticks in {self.episodes} episode(s)"]
        keys: dict[str, KeyCounts] = {}
        dropped: dict[str, Counter[str]] = {}
        for report in self.reports:
            for row in report.keys:
                keys[row.key] = keys[row.key] + row if row.key in keys else row
            for topic, of_topic in report.dropped.items():
                dropped[topic] = dropped.get(topic, Counter()) + of_topic.counts
        lines += _table(list(keys.values()))
        lines += [_dropped_line(topic, counts) for topic, counts in dropped.items() if counts]
        lines += [f"  skipped {skipped['bag']}: {skipped['reason']}" for skipped in self.skipped_bags]
        return lines


def _streams(contents: BagContents, contract: Contract) -> list[Stream]:
    streams = []
    for key, spec in contract.observations.items():
        if isinstance(spec, TransformObservation):
            streams.append(_transform_stream(key, spec, contents.transforms, contents.path))
        else:
            streams.append(_topic_stream(key, spec, contents))
    streams.append(_topic_stream("action", contract.action, contents))
    return streams


def _cuts(contents: BagContents, action: Stream, split_gap_s: float | None) -> np.ndarray:
    """Times where a new episode starts: a tick at or after a cut belongs to the next episode."""
    if len(contents.markers):
        return np.unique(contents.markers)
    if split_gap_s is None:
        return NO_TICKS
    stamps = action.parts[0].stamps
    gaps = np.flatnonzero(np.diff(stamps) > split_gap_s * 1e9)
    # A tick belongs to the episode of the command it takes: with `next`, every tick after the last
    # command before the pause takes a command after it.
    return stamps[gaps] + 1 if action.spec.align.rule == "next" else stamps[gaps + 1]


def _ticks(streams: list[Stream], period_ns: int) -> np.ndarray:
    """The bag's grid: from when every observation stream has started to when a stream runs out."""
    observations, action = streams[:-1], streams[-1]
    first = max(stream.first_stamp for stream in observations)
    if first == -np.inf:  # only static transforms observed: start with the actions
        first = action.first_stamp
    last = min(stream.end_bound for stream in streams)
    if last == np.inf:
        last = max((stream.last_stamp for stream in streams if stream.last_stamp < np.inf), default=np.inf)
    if not (np.isfinite(first) and np.isfinite(last) and first <= last):
        return NO_TICKS
    return int(first) + period_ns * np.arange((int(last) - int(first)) // period_ns + 1, dtype=np.int64)


def _runs(kept: np.ndarray, episode: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the maximal runs of kept ticks within one episode number."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], kept.astype(np.int8), [0]])))
    runs = [np.arange(begin, end) for begin, end in zip(edges[::2], edges[1::2])]
    return [part for run in runs for part in np.split(run, np.flatnonzero(np.diff(episode[run])) + 1)]


def bag_episodes(contents: BagContents, contract: Contract, split_gap_s: float | None = None
                 ) -> tuple[list[Episode], BagReport]:
    """Resample one bag's samples on the control grid: its episodes and the report to print."""
    streams = _streams(contents, contract)
    ticks = _ticks(streams, contract.period_ns)
    selections = [stream.select(ticks) for stream in streams]
    stale = {stream.key: int((~selection.valid).sum()) for stream, selection in zip(streams, selections)}
    kept = np.logical_and.reduce([selection.valid for selection in selections])
    episode_numbers = np.searchsorted(_cuts(contents, streams[-1], split_gap_s), ticks, side="right")
    episodes = []
    for run in _runs(kept, episode_numbers):
        values = {stream.key: stream.take(selection, run) for stream, selection in zip(streams, selections)}
        actions = _relative_actions(values.pop("action"), values, contract)
        following = np.append(run[1:], run[-1])
        next_obs = {stream.key: stream.take(selection, following) for stream, selection in zip(streams, selections)
                    if stream.key != "action"}
        attrs = {"source_bag": str(contents.path), "first_tick_ns": int(ticks[run[0]]),
                 "control_rate_hz": contract.control_rate_hz}
        episodes.append(Episode(obs=values, next_obs=next_obs, actions=actions, attrs=attrs))
    keys = [KeyCounts(stream.key, stream.topic, stream.read, stream.used, stream.dropped, stale[stream.key])
            for stream in streams]
    report = BagReport(contents.path, contract.control_rate_hz, len(ticks), int(kept.sum()), len(episodes), keys,
                       contents.dropped)
    if not episodes:
        raise BagError(_empty_result_message(contents.path, streams, stale, len(ticks)))
    return episodes, report


def _relative_actions(commands: np.ndarray, observations: dict[str, np.ndarray], contract: Contract) -> np.ndarray:
    """The commands of relative outputs as offsets from the tick's measured position, as the node adds them."""
    action = contract.action
    for output, dims in zip(action.streams(), action.slices()):
        if output.relative_to:
            joints = contract.observations[output.relative_to].joints
            commands[:, dims] -= observations[output.relative_to][:, [joints.index(name) for name in output.names]]
    return commands


def _empty_result_message(bag: Path, streams: list[Stream], stale: dict[str, int], ticks: int) -> str:
    if ticks == 0:
        spans = ", ".join(f"{s.key} ({s.topic}) {s.first_stamp / 1e9:.3f}..{s.last_stamp / 1e9:.3f} s"
                          for s in streams if np.isfinite(s.first_stamp))
        return f"{bag}: empty result: the streams do not overlap in time ({spans})"
    reasons = ", ".join(f"{s.key} ({s.topic}) stale at {stale[s.key]}" for s in streams if stale[s.key])
    return f"{bag}: empty result: none of {ticks} ticks has every stream within tolerance ({reasons})"


def convert(bags: list[Path], contract: Contract, out: Path, *, split_topic: str | None = None,
            split_gap_s: float | None = None, env_args: dict | None = None, valid_fraction: float = 0.1,
            seed: int = 0, contract_source: str = "", skip_bad_bags: bool = False,
            log: Callable[[str], None] = print) -> ConversionSummary:
    """Convert bags to one Robomimic-format HDF5 file.

    Every bag is opened and checked before anything is written. A bag that can't be converted
    raises BagError (nothing is written), or with `skip_bad_bags` is skipped and listed.
    """
    bad: dict[Path, BagError] = {}
    for bag in bags:
        try:
            check_bag(bag, contract, split_topic)
        except BagError as error:
            bad[bag] = error
    if bad and (not skip_bad_bags or len(bad) == len(bags)):
        others = len(bags) - len(bad)
        hint = f"\n(--skip-bad-bags converts the other {others} bag(s))" if others and not skip_bad_bags else ""
        raise BagError("\n".join(map(str, bad.values())) + hint)
    summary = ConversionSummary()
    for bag, error in bad.items():
        log(summary.skip(bag, error))
    typestore = default_typestore()

    def episodes() -> Iterator[Episode]:
        for bag in bags:
            if bag in bad:
                continue
            try:
                episodes_of_bag, report = bag_episodes(read_bag(bag, contract, typestore, split_topic), contract,
                                                       split_gap_s)
            except BagError as error:
                if not skip_bad_bags:
                    raise
                log(summary.skip(bag, error))
                continue
            for line in report.lines():
                log(line)
            summary.add(report)
            yield from episodes_of_bag
        if not summary.reports:
            raise BagError(f"all {len(bags)} bag(s) were skipped, there is nothing to write (reasons above)")

    split = f"topic {split_topic}" if split_topic else f"action gap > {split_gap_s} s" if split_gap_s else "per bag"
    attrs = {
        "source": "rosbag2",
        # Filled while write_robomimic consumes the episodes, before it writes the file's attributes.
        "source_bags": summary.source_bags,
        "skipped_bags": summary.skipped_bags,
        "contract": contract.to_dict(),
        "contract_file": contract_source,
        "episode_split": split,
        "tool": f"mvp_ros {__version__} mvp bag2hdf5",
    }
    write_robomimic(out, episodes(), env_args, valid_fraction=valid_fraction, seed=seed, attrs=attrs)
    for line in summary.lines():
        log(line)
    return summary


# ---- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 bag directories (or .mcap/.db3 files)")
    parser.add_argument("--contract", required=True, type=Path, help="observation contract YAML")
    parser.add_argument("--out", required=True, type=Path, help="Robomimic-format HDF5 file to write")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split-topic", metavar="TOPIC", help="start a new episode at each message on TOPIC")
    split.add_argument("--split-gap", type=float, metavar="SECONDS",
                       help="start a new episode where the action stream pauses longer than SECONDS")
    parser.add_argument("--env-args", type=Path, metavar="JSON_FILE",
                        help="environment description stored as data.attrs['env_args']")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="share of episodes in mask/valid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    parser.add_argument("--skip-bad-bags", action="store_true",
                        help="convert the other bags when one can't be (unreadable, empty, a topic without usable "
                             "messages); skipped bags are listed in the summary and the file's skipped_bags attribute")


def _read_env_args(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        env_args = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ContractError(f"--env-args {path}: cannot read a JSON object ({error})") from error
    if not isinstance(env_args, dict):
        raise ContractError(f"--env-args {path}: expected a JSON object, got {type(env_args).__name__}")
    return env_args


def run(args: argparse.Namespace) -> int:
    """ContractError, BagError and DatasetError carry the message the user sees (via mvp_ros.cli)."""
    if args.split_gap is not None and args.split_gap <= 0:
        raise ContractError(f"--split-gap must be > 0 seconds, got {args.split_gap}")
    contract = load_contract(args.contract)
    summary = convert(args.bags, contract, args.out, split_topic=args.split_topic, split_gap_s=args.split_gap,
                      env_args=_read_env_args(args.env_args), valid_fraction=args.valid_fraction, seed=args.seed,
                      contract_source=str(args.contract), skip_bad_bags=args.skip_bad_bags)
    skipped = f", {len(summary.skipped_bags)} skipped" if summary.skipped_bags else ""
    print(f"wrote {args.out}: {summary.episodes} episode(s) from {len(summary.reports)} bag(s){skipped}")
    return 0
