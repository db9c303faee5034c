"""How the contract a policy is deployed with differs from the one its training data was made with.

Refused: differences that change what the policy reads or commands. An observation key's message
type, field, joints (or their order), image size, encoding, crop or resize interpolation; the
action's message type, names (or their order) and how its outputs split the names over command
topics; the control rate (each step of a chunk would span another time); action limits wider than
in training (commands the training data never held).
Allowed: differences that keep the meaning. Topic names (a key's joint sources too), alignment,
stamp source and age limits; an image's transport (sensor_msgs/Image or CompressedImage: both
decode to the contract's pixels, exactly with PNG, approximately with JPEG); limits narrower than
in training; max_delta; the safe action; a JointTrajectory output's timing (`trajectory`); the
robot's name.
Nothing here imports rclpy: the policy node and offline tools compare the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from mvp_ros.data.contract import ActionSpec, Contract, ObservationSpec

# Where a stream's messages come from and how fresh they must be, not what their values mean.
TIMING_FIELDS = ("topic", "sources", "align", "stamp", "max_age_s")
# How the node bounds, replaces and times commands, not what the policy's output means.
ACTION_SAFETY_FIELDS = ("max_delta", "safe_action", "trajectory")
IMAGE_TRANSPORTS = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"}


@dataclass
class ContractDiff:
    """One sentence per difference, naming the key and both values."""

    refused: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)


def compare_contracts(trained: Contract, deployed: Contract, policy_keys: Iterable[str],
                      control_rate_hz: float) -> ContractDiff:
    """Compare the policy's observation keys, the action and the control rate the node runs at."""
    diff = ContractDiff()
    if not math.isclose(trained.control_rate_hz, control_rate_hz):
        diff.refused.append(
            f"control rate: {trained.control_rate_hz:g} Hz in training, {control_rate_hz:g} Hz deployed")
    if trained.robot != deployed.robot:
        diff.allowed.append(f"robot: {trained.robot!r} in training, {deployed.robot!r} deployed")
    for key in policy_keys:
        _compare_observation(key, trained.observations.get(key), deployed.observations.get(key), diff)
    _compare_action(trained.action, deployed.action, diff)
    return diff


def _compare_observation(key: str, trained: ObservationSpec | None, deployed: ObservationSpec | None,
                         diff: ContractDiff) -> None:
    subject = f"observation {key!r}"
    if trained is None or deployed is None:
        missing_from = "the contract of the training data" if trained is None else "the deployed contract"
        diff.refused.append(f"{subject} is not in {missing_from}")
        return
    before, after = trained.to_dict(), deployed.to_dict()
    if before["type"] != after["type"] and {before["type"], after["type"]} - IMAGE_TRANSPORTS:
        diff.refused.append(_sentence(subject, "type", before["type"], after["type"]))
        return  # the other fields of two message types do not compare
    for name in _field_names(before, after):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in TIMING_FIELDS or name == "type":
            diff.allowed.append(_sentence(subject, name, old, new))
        elif name == "joints":
            diff.refused.append(_order_sentence(subject, "joints", old, new))
        elif name == "image":
            if (old["width"], old["height"]) != (new["width"], new["height"]):
                diff.refused.append(_sentence(subject, "image size", f"{old['width']}x{old['height']}",
                                              f"{new['width']}x{new['height']}"))
            for part in ("encoding", "crop", "resize"):
                if old.get(part) != new.get(part):
                    diff.refused.append(_sentence(subject, f"image {part}", old.get(part), new.get(part)))
        else:
            diff.refused.append(_sentence(subject, name, old, new))


def _compare_action(trained: ActionSpec, deployed: ActionSpec, diff: ContractDiff) -> None:
    """Output by output; outputs that split the names otherwise send some dims to another controller."""
    split_before = [list(output.names) for output in trained.streams()]
    split_after = [list(output.names) for output in deployed.streams()]
    if split_before != split_after:
        if trained.names != deployed.names:
            diff.refused.append(_order_sentence("action", "names", list(trained.names), list(deployed.names)))
        else:
            diff.refused.append(_sentence("action", "outputs (names per command topic)", split_before, split_after))
        _compare_limits(trained, deployed, diff)
        return
    single = len(split_before) == 1
    for index, (before_output, after_output) in enumerate(zip(trained.streams(), deployed.streams())):
        _compare_output("action" if single else f"action output {index}", before_output, after_output, diff)


def _compare_output(subject: str, trained: ActionSpec, deployed: ActionSpec, diff: ContractDiff) -> None:
    before, after = trained.to_dict(), deployed.to_dict()
    for name in _field_names(before, after):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if name in TIMING_FIELDS or name in ACTION_SAFETY_FIELDS:
            diff.allowed.append(_sentence(subject, name, old, new))
        elif name == "names":
            diff.refused.append(_order_sentence(subject, "names", old, new))
        elif name == "limits":
            _compare_limits(trained, deployed, diff)
        else:
            diff.refused.append(_sentence(subject, name, old, new))


def _compare_limits(trained: ActionSpec, deployed: ActionSpec, diff: ContractDiff) -> None:
    if len(trained.names) != len(deployed.names):
        return  # the names differ, which is refused already; the limits have no dimension to pair with
    for name, low, high, trained_low, trained_high in zip(deployed.names, deployed.lower, deployed.upper,
                                                          trained.lower, trained.upper):
        if (low, high) == (trained_low, trained_high):
            continue
        wider = low < trained_low or high > trained_high
        sentence = (f"action {name!r}: limits {_interval(low, high)} deployed are {'wider' if wider else 'narrower'}"
                    f" than {_interval(trained_low, trained_high)} in training")
        (diff.refused if wider else diff.allowed).append(sentence)


def _order_sentence(subject: str, what: str, trained: list[str], deployed: list[str]) -> str:
    if sorted(trained) != sorted(deployed):
        return _sentence(subject, what, trained, deployed)
    both = f"({_show(trained)} in training, {_show(deployed)} deployed)"
    moved = [(old, new) for old, new in zip(trained, deployed) if old != new]
    if len(moved) == 2:
        return f"{subject}: {what} {moved[0][0]!r} and {moved[0][1]!r} are swapped {both}"
    return f"{subject}: {what} are in another order {both}"


def _sentence(subject: str, name: str, trained: Any, deployed: Any) -> str:
    return f"{subject}: {name} {_show(trained)} in training, {_show(deployed)} deployed"


def _field_names(before: dict, after: dict) -> list[str]:
    return [*before, *(name for name in after if name not in before)]


def _interval(low: float, high: float) -> str:
    return f"[{low:g}, {high:g}]"


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{name}: {_show(item)}" for name, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
