"""The policy node's control logic without ROS: observations in, at most one command out per tick.

The node (mvp_ros/ros/policy_node.py) feeds this core messages, timer events and lifecycle
events, with the time on its clock (`now_ns`, ROS or sim time); the core reads a steady clock
(`steady()`, seconds) for latencies and deadlines, and sends every command through `publish`.
Nothing here sleeps or reads a clock of its own, so tests drive it step by step.

A tick starts when the timer fires. If every key has a sample within its age limit, it runs at
once; otherwise it waits for the missing samples, up to half a period, and runs when they arrive.
A tick that waited longer is stale. The rules:

- A hold (stale tick, overrun, NaN or inf in a chunk, deactivate, the watchdog) publishes the safe
  action and discards every chunk and ensemble buffer planned before it. Until the policy has run
  again on samples all taken after the hold began, every tick holds. A new episode (reset, a clock
  jump back) discards the plans, the samples and the last command: the next tick waits for new samples.
- Every command passes CommandGuard (limits, max_delta from the last command and from the measured
  position; the first command after activate, reset or a hold ramps in from where the robot is).
  When an output publishes whole chunks, the command carries the chunk's remaining actions, each
  within max_delta of the one before, stamped with the tick's time (the observation's). The dims
  of a relative output are offsets: what is sent is the measured position (the tick's sample; for
  a hold, the latest) plus the limited offset, and a hold's offset is 0.
- The watchdog: when no command went out for `watchdog_s` of steady time while active (a starved
  executor, a dead simulation clock), the safe action is published.
- A tick slower than `tick_timeout_s` from observation ready to command publishes the safe action.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mvp_ros.data.contract import ActionSpec, Contract
from mvp_ros.policy.chunks import ChunkExecutor
from mvp_ros.tick.commands import Command, CommandGuard, measured_joints, relative_joints
from mvp_ros.tick.observations import ObservationBuffer
from mvp_ros.tick.stats import RollingTimes, Throttle


class ActingPolicy(Protocol):
    obs_keys: list[str]

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


# Events counted per diagnostics period; the first group makes the period WARN, the second ERROR.
WARNING_EVENTS = ("holds", "stale_ticks", "overruns", "non_finite_chunks", "missed_ticks")
ERROR_EVENTS = ("withheld", "watchdog")


@dataclass
class PeriodSummary:
    """What happened since the previous summary: event counts and the keys that were stale."""

    events: Counter = field(default_factory=Counter)
    stale_keys: set[str] = field(default_factory=set)
    hold_reasons: Counter = field(default_factory=Counter)

    @property
    def level(self) -> str:
        if any(self.events[name] for name in ERROR_EVENTS):
            return "error"
        return "warn" if any(self.events[name] for name in WARNING_EVENTS) else "ok"

    def message(self) -> str:
        parts = [f"{name} {self.events[name]}" for name in (*ERROR_EVENTS, *WARNING_EVENTS) if self.events[name]]
        if self.stale_keys:
            parts.append(f"stale {sorted(self.stale_keys)}")
        if self.hold_reasons:
            parts.append("holds: " + "; ".join(f"{why} x{count}" for why, count in self.hold_reasons.most_common(3)))
        return ", ".join(parts)


class TickCore:
    def __init__(self, policy: ActingPolicy, chunks: ChunkExecutor, buffer: ObservationBuffer, guard: CommandGuard,
                 *, period_ns: int, tick_timeout_s: float, watchdog_s: float,
                 publish: Callable[[Command], None], steady: Callable[[], float],
                 log: Callable[[str, str], None], decode: Callable[[str, Any], Any] = lambda topic, msg: msg,
                 plans: bool = False) -> None:
        """`publish(command)` sends one Command (with `plans`, carrying the chunk's remaining actions);
        `log(level, text)` with level 'info', 'warn' or 'error' (repeated lines are throttled here);
        `decode(topic, data)` turns what `observe` is given into a message (the node receives serialized
        messages)."""
        self.policy, self.chunks, self.buffer, self.guard = policy, chunks, buffer, guard
        self.period_ns, self.tick_timeout_s, self.watchdog_s = period_ns, tick_timeout_s, watchdog_s
        self.plans = plans
        self._publish, self.steady, self._log = publish, steady, log
        self.throttle = Throttle(clock=steady)
        self.decode = decode
        self.coalesce_s = period_ns / 4e9
        self._deferred: dict[str, tuple[Any, int, float]] = {}  # topic -> (data, receive ns, arrival s), unread
        self._read_at_s: dict[str, float] = {}
        self.superseded: Counter = Counter()  # topic -> messages replaced by a newer one before being read
        self._measuring_topics = {stream.topic for key in guard.keys for stream in buffer.specs[key].streams()}
        self.active = False
        self.totals: Counter = Counter()  # since start: ticks, commands, holds, ... (the diagnostics' counts)
        self.period = PeriodSummary()
        self.stale_keys: list[str] = []
        self.hold_reason: str | None = None  # a hold in force: until a fresh inference, every tick holds
        self._hold_began_ns: int | None = None
        self._pending: tuple[int, float] | None = None  # the waiting tick: (clock ns, steady s)
        self._last_fire_ns: int | None = None
        self.last_publish_s = steady()
        self.tick_latency_ms = RollingTimes()  # observation ready -> command published
        self.inference_ms = RollingTimes()

    # ---- lifecycle and episode events ---------------------------------------------------------

    def activate(self, seed: int, now_ns: int) -> None:
        self.begin_episode(seed, now_ns)
        self._last_fire_ns = None
        self.last_publish_s = self.steady()
        self.active = True

    def deactivate(self, why: str, now_ns: int) -> None:
        """Stop ticking; publishes the safe action."""
        self.active = False
        self._pending = None
        self.hold(why, now_ns)

    def begin_episode(self, seed: int, now_ns: int) -> None:
        """Forget the last episode: its samples, its plans, its pending tick, its last command."""
        self.policy.reset(seed)
        self.chunks.reset()
        self.buffer.clear()
        self._deferred.clear()
        self.guard.reset()
        self._pending = None
        self.hold_reason, self._hold_began_ns = None, None
        self.totals["episodes"] += 1

    def clock_jumped_back(self, seed: int, now_ns: int) -> None:
        """The clock's source restarted: samples of the old timeline mean nothing, a new episode
        begins (as with a reset, the next command waits for samples of the new timeline)."""
        self.begin_episode(seed, now_ns)
        self._last_fire_ns = None

    # ---- observations and ticks ---------------------------------------------------------------

    def observe(self, topic: str, data: Any, now_ns: int) -> str | None:
        """One received message (as `decode` takes it); the reason it was rejected, or None.

        A message that follows the last one read on its topic by less than a quarter period, while
        no tick waits, is kept unread: the next one replaces it (counted as superseded), and the
        tick reads the latest. So a flood costs a store per message, not a decode, and a topic at a
        normal rate has every message read and checked as it comes. A topic with several publishers
        (joint sources) has every message read: one publisher's message must not replace another's.
        """
        self._give_up_if_late(now_ns)  # before the message replaces a sample: the stale keys are reported as they were
        arrived_s = self.steady()
        if self._deferred.pop(topic, None) is not None:
            self.superseded[topic] += 1
        recently_read = arrived_s - self._read_at_s.get(topic, -math.inf) < self.coalesce_s
        if self._pending is None and recently_read and topic not in self.buffer.shared_topics:
            self._deferred[topic] = (data, now_ns, arrived_s)
            return None
        reason = self._read(topic, data, now_ns, arrived_s)
        self.try_tick(now_ns)
        return reason

    def _read(self, topic: str, data: Any, receive_ns: int, arrived_s: float) -> str | None:
        self._read_at_s[topic] = arrived_s
        try:
            msg = self.decode(topic, data)
        except Exception as error:  # noqa: BLE001 - whatever the bytes do to the decoder, the message is malformed
            reason = self.buffer.reject(topic, "malformed", f"cannot decode the message: {error}")
        else:
            reason = self.buffer.accept(topic, msg, receive_ns, receive_ns, arrived_s)
        if reason is not None:
            self.log_throttled("warn", (topic, reason),
                               f"rejected a message on {topic} ({reason}): {self.buffer.last_reject[topic]}")
            return reason
        if topic in self._measuring_topics:
            self.guard.measure(self.buffer.measured(self.guard.keys))
        return None

    def _read_deferred(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for topic, (data, receive_ns, arrived_s) in deferred.items():
            self._read(topic, data, receive_ns, arrived_s)

    def timer(self, now_ns: int) -> None:
        """The control timer fired: a new tick is due."""
        if not self.active:
            return
        if self._last_fire_ns is not None:
            missed = max(0, round((now_ns - self._last_fire_ns) / self.period_ns) - 1)
            self._count("missed_ticks", missed)
        self._last_fire_ns = now_ns
        if self._pending is not None:
            self._give_up_waiting(now_ns)
        self._pending = (now_ns, self.steady())
        self._read_deferred()
        self.try_tick(now_ns)

    def try_tick(self, now_ns: int) -> None:
        """Run the waiting tick if its samples are all there (or give up on it past half a period)."""
        if self._pending is None or self._give_up_if_late(now_ns):
            return
        if self.buffer.stale_keys(now_ns, self._hold_began_ns):
            return
        tick_ns, ready_s = self._pending[0], max(self._pending[1], self.buffer.latest_arrival_s())
        self._pending = None
        self.stale_keys = []
        self._tick(tick_ns, ready_s, now_ns)

    def watchdog(self, now_ns: int) -> None:
        """Called often from a thread of its own: publish the safe action if no command went out in time."""
        if self.active and self.steady() - self.last_publish_s > self.watchdog_s:
            self._count("watchdog")
            self.hold(f"no command for {self.watchdog_s * 1e3:.0f} ms (watchdog)", now_ns)
            self.last_publish_s = self.steady()  # once per deadline, whether or not a safe action went out

    def _give_up_if_late(self, now_ns: int) -> bool:
        """Samples later than half a period after the tick belong to the next tick: the waiting one is stale."""
        if self._pending is not None and now_ns - self._pending[0] > self.period_ns // 2:
            self._give_up_waiting(now_ns)
            return True
        return False

    def _give_up_waiting(self, now_ns: int) -> None:
        deadline_ns = self._pending[0] + self.period_ns // 2
        self._pending = None
        self._count("stale_ticks")
        self.stale_keys = self.buffer.stale_keys(now_ns, self._hold_began_ns)
        self.period.stale_keys.update(self.stale_keys)
        # The hold began at the waiting tick's deadline: what arrived after it is news.
        self.hold(f"observations stale or missing: {self.stale_keys}", now_ns, began_ns=min(now_ns, deadline_ns) + 1)

    def _tick(self, tick_ns: int, ready_s: float, now_ns: int) -> None:
        self.totals["ticks"] += 1
        samples = self.buffer.observation(list(self.buffer.specs))
        if self.chunks.needs_chunk:
            started = self.steady()
            chunk = self.policy.act({key: samples[key] for key in self.policy.obs_keys})
            self.inference_ms.add((self.steady() - started) * 1e3)
            if not np.isfinite(chunk).all():
                self._count("non_finite_chunks")
                self.hold("the policy produced NaN or inf", now_ns)
                return
            self.chunks.add_chunk(chunk)
        action = self.chunks.next_action()
        if self.steady() - ready_s > self.tick_timeout_s:
            self._count("overruns")
            self.hold(f"tick took longer than {self.tick_timeout_s * 1e3:.1f} ms", now_ns)
            return
        command = self.guard.limit(action, samples)
        plan = self.guard.limit_plan(command, self.chunks.planned()) if self.plans else np.zeros((0, len(command)))
        offset = self.guard.offset(samples)
        if self._send(Command(command + offset, tick_ns, plan + offset), command):
            self.hold_reason, self._hold_began_ns = None, None
            self.tick_latency_ms.add((self.steady() - ready_s) * 1e3)

    # ---- holds and publishing -----------------------------------------------------------------

    def hold(self, why: str, now_ns: int, began_ns: int | None = None) -> None:
        """Publish the safe action and discard every plan made before now. Until the policy runs on
        samples all taken at or after `began_ns` (default: just after now), every tick holds."""
        self._count("holds")
        self.period.hold_reasons[why.split(":")[0]] += 1
        self.chunks.reset()
        self._pending = None
        if self.hold_reason is None:
            self._hold_began_ns = now_ns + 1 if began_ns is None else began_ns
        self.hold_reason = why
        safe, offset = self.guard.safe_action(), self.guard.offset()
        if safe is None or offset is None:
            self._count("withheld")
            self.log_throttled("error", "withheld", f"holding ({why}) but no safe action exists yet: no measured"
                               " position of the position-target (or relative) joints; publishing nothing")
            return
        self.log_throttled("warn", "hold", f"holding: {why}")
        self._send(Command(safe + offset, now_ns, np.zeros((0, len(safe)))), safe)

    def _send(self, command: Command, action: np.ndarray) -> bool:
        """Publish `command`, the policy's (or the safe) `action` with relative dims made absolute."""
        if not (np.isfinite(command.action).all() and np.isfinite(command.plan).all()):  # a last line of defence
            self._count("withheld")
            self.log_throttled("error", "non_finite_command",
                               f"refusing to publish a non-finite command {command.action.tolist()}")
            return False
        self._publish(command)
        self.guard.sent(action)
        self.last_publish_s = self.steady()
        self.totals["commands"] += 1
        return True

    def _count(self, event: str, times: int = 1) -> None:
        if times:
            self.totals[event] += times
            self.period.events[event] += times

    def take_period(self) -> PeriodSummary:
        """The events since the last call (for one diagnostics message)."""
        period, self.period = self.period, PeriodSummary()
        return period

    def log_throttled(self, level: str, key: Hashable, text: str) -> None:
        if self.throttle.ready(key):
            self._log(level, text)


def build_tick_core(policy: ActingPolicy, horizon: int, contract: Contract, action: ActionSpec, *, period_ns: int,
                    execute: int | None, temporal_ensemble: bool, ensemble_decay: float, max_age_s: float,
                    tick_timeout_s: float, watchdog_s: float, publish: Callable[[Command], None],
                    steady: Callable[[], float], log: Callable[[str, str], None],
                    decode: Callable[[str, Any], Any] = lambda topic, msg: msg) -> TickCore:
    """A core for `policy` on `contract`, with `action` (the contract's, possibly with the node's
    max_delta). The buffer holds the policy's keys and the keys that measure position targets.
    ValueError if the action cannot be kept safe (CommandGuard.check)."""
    guard = CommandGuard(action, measured_joints(contract, action), relative_joints(contract, action))
    guard.check()
    keys = [*policy.obs_keys, *sorted(guard.keys - set(policy.obs_keys))]
    buffer = ObservationBuffer({key: contract.observations[key] for key in keys}, period_ns, max_age_s)
    chunks = ChunkExecutor(horizon, execute=execute, temporal_ensemble=temporal_ensemble, ensemble_decay=ensemble_decay)
    return TickCore(policy, chunks, buffer, guard, period_ns=period_ns, tick_timeout_s=tick_timeout_s,
                    watchdog_s=watchdog_s, publish=publish, steady=steady, log=log, decode=decode,
                    plans=any(output.chunk for output in action.streams()))
