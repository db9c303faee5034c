"""The latest accepted sample of each observation key, and why messages were rejected.

A message is accepted only if every key read from its topic extracts cleanly through the
observation contract; otherwise it is dropped whole, counted under its topic and a reason, and
the previous samples stay. No rclpy here: the node passes messages, receive times and clock times.

A JointState key with `sources` (several publishers, on one topic or several) keeps a sample per
source, under the source's key `<key>[<index>]`: a message updates the sources whose joints it
carries, each source's age is checked on its own, and the key's array is assembled from the
latest sample of every source, as bag conversion assembles it.

Reasons for a reject:
  non_finite    NaN or inf where the contract reads
  malformed     the message does not fit the contract (joint names, array length, image size or
                encoding, ...)
  out_of_order  stamped before the sample already held for one of its keys
  future_stamp  stamped more than one control period after the node's clock
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from mvp_ros.data.contract import MessageError, NonFiniteError, ObservationSpec


@dataclass(frozen=True)
class Sample:
    value: np.ndarray
    stamp_ns: int
    arrived_s: float  # the steady clock's time (s) when it was accepted


class ObservationBuffer:
    def __init__(self, specs: dict[str, ObservationSpec], period_ns: int, max_age_s: float = 0.0) -> None:
        """`specs`: the keys the policy reads. `max_age_s` > 0 caps every key's age limit."""
        self.specs = specs
        self.period_ns = period_ns
        self.topics: dict[str, list[ObservationSpec]] = {}
        self.parts: dict[str, list[str]] = {}  # key -> the keys its samples are held under
        for key, spec in specs.items():
            for stream in spec.streams():
                self.topics.setdefault(stream.topic, []).append(stream)
            self.parts[key] = [stream.key for stream in spec.streams()] or [key]
        # Topics with several publishers (joint sources): each message must be read, none replaces another unread
        self.shared_topics = {topic for topic, streams in self.topics.items() if any(s.partial for s in streams)}
        self.age_limits_ns = {part: _limit_ns(spec.age_limit_s(), max_age_s)
                              for key, spec in specs.items() for part in self.parts[key]}
        self.samples: dict[str, Sample] = {}
        self.rejects: Counter[tuple[str, str]] = Counter()  # (topic, reason) -> messages
        self.last_reject: dict[str, str] = {}  # topic -> what was wrong with its latest rejected message

    def accept(self, topic: str, msg: Any, receive_ns: int, now_ns: int, arrived_s: float) -> str | None:
        """Store the samples of one message; the reason it was rejected, or None."""
        specs = [spec for spec in self.topics[topic] if spec.applies(msg)]
        if not specs:
            keys = [spec.key for spec in self.topics[topic]]
            return self.reject(topic, "malformed", f"{topic}: the message carries none of the joints of {keys}")
        try:
            values = {spec.key: (spec.extract(msg), spec.stamp(msg, receive_ns)) for spec in specs}
        except NonFiniteError as error:
            return self.reject(topic, "non_finite", str(error))
        except MessageError as error:
            return self.reject(topic, "malformed", str(error))
        for key, (_, stamp_ns) in values.items():
            held = self.samples.get(key)
            if held is not None and stamp_ns < held.stamp_ns:
                return self.reject(topic, "out_of_order",
                                   f"{key}: stamp {stamp_ns} ns is before the held sample's {held.stamp_ns} ns")
            if stamp_ns > now_ns + self.period_ns:
                return self.reject(topic, "future_stamp", f"{key}: stamp {stamp_ns} ns is ahead of the clock ({now_ns} ns)")
        self.store(values, arrived_s)
        return None

    def store(self, values: dict[str, tuple[np.ndarray, int]], arrived_s: float) -> None:
        for key, (value, stamp_ns) in values.items():
            self.samples[key] = Sample(value, stamp_ns, arrived_s)

    def ages_s(self, now_ns: int) -> dict[str, float | None]:
        """Each key's (or source's) sample age in seconds (None: no sample yet)."""
        return {
            part: (now_ns - sample.stamp_ns) / 1e9 if (sample := self.samples.get(part)) else None
            for part in self.age_limits_ns
        }

    def stale_keys(self, now_ns: int, taken_since_ns: int | None = None) -> list[str]:
        """Keys (or sources) with no sample, or one older than their age limit; with `taken_since_ns`,
        also those with an age limit whose sample was taken before that time."""
        fence = -math.inf if taken_since_ns is None else taken_since_ns
        return [
            part for part, limit_ns in self.age_limits_ns.items()
            if (sample := self.samples.get(part)) is None
            or now_ns - sample.stamp_ns > limit_ns
            or (sample.stamp_ns < fence and limit_ns != math.inf)
        ]

    def observation(self, keys: list[str]) -> dict[str, np.ndarray]:
        return {key: self.specs[key].assemble([self.samples[part].value for part in self.parts[key]]) for key in keys}

    def measured(self, keys: set[str]) -> dict[str, np.ndarray]:
        """The arrays of those `keys` that have a sample from any source, NaN for the joints of a
        source that has none yet (what is measured so far, for the command limits)."""
        found = {}
        for key in keys:
            spec, held = self.specs[key], [self.samples.get(part) for part in self.parts[key]]
            if any(held):
                streams = spec.streams() or (spec,)
                found[key] = spec.assemble([sample.value if sample else np.full(stream.shape, np.nan)
                                            for sample, stream in zip(held, streams)])
        return found

    def latest_arrival_s(self) -> float:
        return max((sample.arrived_s for sample in self.samples.values()), default=0.0)

    def clear(self) -> None:
        self.samples.clear()

    def reject(self, topic: str, reason: str, what: str) -> str:
        self.rejects[topic, reason] += 1
        self.last_reject[topic] = what
        return reason


def _limit_ns(contract_limit_s: float, cap_s: float) -> float:
    limit_s = min(contract_limit_s, cap_s) if cap_s > 0 else contract_limit_s
    return math.inf if math.isinf(limit_s) else limit_s * 1e9
