"""Node parameters declared from specs and checked where they enter: at start-up (`-p`,
`--params-file`, the command's options) and on every later `ros2 param set`.

A value of the wrong type, out of range, non-finite where a bound is given, or not one of the
allowed strings is refused with a ParameterError naming the parameter, what it takes and what was
given (the `mvp` command prints it and exits 2). An override that names no parameter of the node
is logged as a warning with the closest declared name, and a `--params-file` with no section for
the node is refused, listing its sections, instead of being silently ignored.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TYPE_NAMES = {
    Parameter.Type.BOOL: "a boolean",
    Parameter.Type.INTEGER: "an integer",
    Parameter.Type.DOUBLE: "a double",
    Parameter.Type.STRING: "a string",
    Parameter.Type.BYTE_ARRAY: "a list of bytes",
    Parameter.Type.BOOL_ARRAY: "a list of booleans",
    Parameter.Type.INTEGER_ARRAY: "a list of integers",
    Parameter.Type.DOUBLE_ARRAY: "a list of doubles",
    Parameter.Type.STRING_ARRAY: "a list of strings",
}
NUMERIC_TYPES = {Parameter.Type.INTEGER, Parameter.Type.DOUBLE, Parameter.Type.INTEGER_ARRAY, Parameter.Type.DOUBLE_ARRAY}
ARRAY_TYPES = {Parameter.Type.BYTE_ARRAY, Parameter.Type.BOOL_ARRAY, Parameter.Type.INTEGER_ARRAY,
               Parameter.Type.DOUBLE_ARRAY, Parameter.Type.STRING_ARRAY}


@dataclass(frozen=True)
class ParameterSpec:
    default: Any  # a value, or an rclpy Parameter.Type for a parameter with no default (unset unless given)
    description: str
    minimum: float | None = None  # inclusive; also rejects NaN/inf for doubles when a bound is given
    maximum: float | None = None  # inclusive
    choices: tuple[str, ...] = ()  # allowed string values


class ParameterError(ValueError):
    """A parameter value, name or parameters file the node cannot take."""


def _type(spec: ParameterSpec) -> Parameter.Type:
    return spec.default if isinstance(spec.default, Parameter.Type) else Parameter.Type.from_parameter_value(spec.default)


def _bounded(spec: ParameterSpec) -> bool:
    return spec.minimum is not None or spec.maximum is not None


def _requirement(spec: ParameterSpec) -> str:
    """What the parameter takes, in words: 'a finite double from 0.001 to 3600'."""
    if spec.choices:
        return "one of " + ", ".join(repr(choice) for choice in spec.choices)
    parameter_type = _type(spec)
    text = TYPE_NAMES[parameter_type]
    if parameter_type in (Parameter.Type.DOUBLE, Parameter.Type.DOUBLE_ARRAY) and _bounded(spec):
        text = text.replace("double", "finite double", 1)
    if spec.minimum is not None and spec.maximum is not None:
        bounds = f"from {spec.minimum:g} to {spec.maximum:g}"
    elif spec.minimum is not None:
        bounds = f">= {spec.minimum:g}"
    elif spec.maximum is not None:
        bounds = f"<= {spec.maximum:g}"
    else:
        return text
    return f"{text}, each {bounds}" if parameter_type in ARRAY_TYPES else f"{text} {bounds}"


def _refused_value(spec: ParameterSpec, parameter: Parameter) -> str | None:
    """The given value as the error names it, if the spec refuses it; None if it is allowed."""
    parameter_type = _type(spec)
    if parameter.type_ == Parameter.Type.NOT_SET:  # what `-p NAME:=[]` gives
        return None if isinstance(spec.default, Parameter.Type) else "an empty list, which leaves it unset"
    values = list(parameter.value) if parameter.type_ in ARRAY_TYPES else [parameter.value]
    shown = repr(values if parameter.type_ in ARRAY_TYPES else parameter.value)
    if parameter.type_ != parameter_type:
        integer_for_double = (parameter_type, parameter.type_) == (Parameter.Type.DOUBLE, Parameter.Type.INTEGER)
        return f"{shown}, {TYPE_NAMES[parameter.type_]}" + (" (write it with a decimal point)" if integer_for_double else "")
    if spec.choices and any(value not in spec.choices for value in values):
        return shown
    if parameter_type in NUMERIC_TYPES and _bounded(spec) and any(
        not math.isfinite(value)
        or (spec.minimum is not None and value < spec.minimum)
        or (spec.maximum is not None and value > spec.maximum)
        for value in values
    ):
        return shown
    return None


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """The description and range `ros2 param describe` shows."""
    descriptor = ParameterDescriptor(description=spec.description, additional_constraints=_requirement(spec))
    parameter_type = _type(spec)
    if parameter_type == Parameter.Type.INTEGER and _bounded(spec):
        low = INT64_MIN if spec.minimum is None else math.ceil(spec.minimum)
        high = INT64_MAX if spec.maximum is None else math.floor(spec.maximum)
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
    elif parameter_type == Parameter.Type.DOUBLE and _bounded(spec):
        low = -math.inf if spec.minimum is None else float(spec.minimum)
        high = math.inf if spec.maximum is None else float(spec.maximum)
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    return descriptor


def _check(name: str, spec: ParameterSpec, parameter: Parameter) -> None:
    refused = _refused_value(spec, parameter)
    if refused is not None:
        raise ParameterError(f"parameter {name!r} must be {_requirement(spec)}; got {refused}")


def declare_parameters(node: Node, specs: dict[str, ParameterSpec]) -> None:
    """Declare every parameter with its description and range; raise ParameterError for an override
    of the wrong type, out of range, non-finite or not one of the choices; warn about overrides that
    match no declared parameter; refuse such values in later `ros2 param set` calls too."""
    # rclpy keeps the node's overrides (its `-p` and params-file entries, already matched to this
    # node's name, plus the constructor's parameter_overrides) here and applies them in declare_parameter.
    overrides: dict[str, Parameter] = node._parameter_overrides
    for name, spec in specs.items():
        if name in overrides:
            _check(name, spec, overrides[name])
        node.declare_parameter(name, spec.default, _descriptor(spec))

    def on_set(parameters: list[Parameter]) -> SetParametersResult:
        try:
            for parameter in parameters:
                if parameter.name in specs:
                    _check(parameter.name, specs[parameter.name], parameter)
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    declared = list(node._parameters)
    for name in sorted(set(overrides) - set(declared)):
        close = difflib.get_close_matches(name, declared, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else f"; its parameters are {sorted(declared)}"
        node.get_logger().warning(f"parameter {name!r} was given but {node.get_fully_qualified_name()} has no such"
                                  f" parameter, so it is ignored{suggestion}")


def check_params_files(ros_args: list[str], node_name: str) -> None:
    """Raise ParameterError if a `--params-file FILE` among ros_args is missing, is not YAML of node
    sections, or has no section that applies to the node (`node_name`, `/node_name`, `/**`, `**`,
    wildcards as ROS 2 matches them, under the namespace and name that `-r __ns:=` / `-r __node:=`
    give it), listing the sections it has. Run before rclpy.init, which fails on the first two
    with a message that names no parameter."""
    fully_qualified_name = _fully_qualified_name(ros_args, node_name)
    for path in (Path(value) for flag, value in zip(ros_args, ros_args[1:]) if flag == "--params-file"):
        try:
            sections = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ParameterError(f"parameters file {path}: {error.strerror or error}") from error
        except yaml.YAMLError as error:
            raise ParameterError(f"parameters file {path} is not valid YAML: {error}") from error
        if not isinstance(sections, dict):
            raise ParameterError(f"parameters file {path} must map node names to their ros__parameters")
        if not any(_section_applies(str(section), fully_qualified_name) for section in sections):
            raise ParameterError(
                f"parameters file {path} has no section for node {fully_qualified_name}: its sections are"
                f" {[str(section) for section in sections]} (use {node_name!r} or '/**')")


def _fully_qualified_name(ros_args: list[str], node_name: str) -> str:
    """`/namespace/name` after the first `__ns` and `__node` remaps that apply (as rcl takes the first)."""
    namespace, name = "", node_name
    rules = [rule for flag, rule in zip(ros_args, ros_args[1:]) if flag in ("-r", "--remap")]
    for rule in rules:
        target, _, value = rule.partition(":=")
        applies_to, _, key = target.rpartition(":")
        if applies_to not in ("", node_name):
            continue
        if key == "__ns" and not namespace:
            namespace = value.rstrip("/")
        elif key in ("__node", "__name") and name == node_name:
            name = value
    return f"/{namespace.lstrip('/')}/{name}".replace("//", "/")


def _section_applies(section: str, fully_qualified_name: str) -> bool:
    """ROS 2's matching of a params-file section to a node: `/**` is any number of name tokens,
    `/*` exactly one, and a section without a leading slash is taken from the root."""
    pattern = re.escape(section if section.startswith("/") else f"/{section}")
    pattern = pattern.replace(r"/\*\*", r"(/\w+)*").replace(r"/\*", r"/\w+")
    return re.fullmatch(pattern, fully_qualified_name) is not None
