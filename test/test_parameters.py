"""Node parameters checked where they enter (mvp_ros/ros/parameters.py): real rclpy nodes given
`-p` overrides, `--params-file` files and constructor overrides; later sets over the parameter
services, as `ros2 param set` makes them; and the `mvp` commands' exit status and messages."""
from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from mvp_ros.ros.parameters import ParameterError, ParameterSpec, check_params_files, declare_parameters

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import MVP, REPO, domain_environment  # noqa: E402

NODE_NAME = "tiny"
SPECS = {
    "rate_hz": ParameterSpec(10.0, "ticks per second", minimum=0.5, maximum=1000.0),
    "steps": ParameterSpec(3, "steps per tick", minimum=0, maximum=100),
    "mode": ParameterSpec("fast", "how to run", choices=("fast", "exact")),
    "gains": ParameterSpec(Parameter.Type.DOUBLE_ARRAY, "per-joint gains; unset: the robot's", minimum=0.0),
    "scale": ParameterSpec(1.0, "an unbounded double"),
    "label": ParameterSpec("", "free text"),
}


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return domain_environment()


@contextmanager
def tiny_node(env: dict[str, str], ros_args: list[str] = (), overrides: list[Parameter] = ()) -> Iterator[Node]:
    """A node called `tiny` in a fresh rclpy context initialised with `--ros-args ROS_ARGS`,
    its SPECS declared."""
    context = Context()
    rclpy.init(args=["test_parameters", "--ros-args", *ros_args], context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    try:
        node = Node(NODE_NAME, context=context, parameter_overrides=list(overrides))
        try:
            declare_parameters(node, SPECS)
            yield node
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


def params_file(path: Path, section: str, parameters: str = "steps: 5") -> Path:
    path.write_text(f"'{section}':\n  ros__parameters:\n    {parameters}\n")
    return path


def test_defaults_and_valid_overrides_from_every_source_are_taken(env, tmp_path) -> None:
    path = params_file(tmp_path / "params.yaml", "/**", "gains: [0.5, 2.0]")
    ros_args = ["-p", "rate_hz:=250.0", "-p", "mode:=exact", "-p", "scale:=.nan", "--params-file", str(path)]
    with tiny_node(env, ros_args, [Parameter("steps", value=100)]) as node:
        values = {name: node.get_parameter(name).value for name in SPECS}
    assert values["rate_hz"] == 250.0 and values["mode"] == "exact" and values["steps"] == 100  # the bound is inclusive
    assert list(values["gains"]) == [0.5, 2.0] and values["label"] == ""
    assert math.isnan(values["scale"])  # no bound given: any double


@pytest.mark.parametrize(("ros_args", "message"), [
    (["-p", "rate_hz:=fast"], "parameter 'rate_hz' must be a finite double from 0.5 to 1000; got 'fast', a string"),
    (["-p", "rate_hz:=20"],
     "parameter 'rate_hz' must be a finite double from 0.5 to 1000; got 20, an integer (write it with a decimal point)"),
    (["-p", "rate_hz:=.nan"], "parameter 'rate_hz' must be a finite double from 0.5 to 1000; got nan"),
    (["-p", "rate_hz:=.inf"], "parameter 'rate_hz' must be a finite double from 0.5 to 1000; got inf"),
    (["-p", "rate_hz:=0.25"], "parameter 'rate_hz' must be a finite double from 0.5 to 1000; got 0.25"),
    (["-p", "steps:=-5"], "parameter 'steps' must be an integer from 0 to 100; got -5"),
    (["-p", "steps:=2.0"], "parameter 'steps' must be an integer from 0 to 100; got 2.0, a double"),
    (["-p", "steps:=[]"], "parameter 'steps' must be an integer from 0 to 100; got an empty list, which leaves it unset"),
    (["-p", "mode:=quick"], "parameter 'mode' must be one of 'fast', 'exact'; got 'quick'"),
    (["-p", "gains:=[1.0, -0.5]"], "parameter 'gains' must be a list of finite doubles, each >= 0; got [1.0, -0.5]"),
    (["-p", "label:=true"], "parameter 'label' must be a string; got True, a boolean"),
], ids=["string-for-double", "integer-for-double", "nan", "inf", "below-minimum", "negative-integer", "double-for-integer",
        "unset", "not-a-choice", "array-element-out-of-range", "bool-for-string"])
def test_a_bad_override_is_refused_naming_the_parameter_what_it_takes_and_what_was_given(env, ros_args, message) -> None:
    with pytest.raises(ParameterError) as error:
        with tiny_node(env, ros_args):
            pass
    assert str(error.value) == message


def test_params_file_and_constructor_overrides_are_checked_too(env, tmp_path) -> None:
    path = params_file(tmp_path / "params.yaml", NODE_NAME, "steps: 1000")
    with pytest.raises(ParameterError, match=r"parameter 'steps' must be an integer from 0 to 100; got 1000$"):
        with tiny_node(env, ["--params-file", str(path)]):
            pass
    with pytest.raises(ParameterError, match=r"parameter 'mode' must be one of 'fast', 'exact'; got 'slow'$"):
        with tiny_node(env, overrides=[Parameter("mode", value="slow")]):
            pass


def test_overrides_for_no_declared_parameter_are_warned_about_with_the_closest_name(env, capfd) -> None:
    ros_args = ["-p", "rate_hx:=5.0", "-p", "zzz_unrelated:=1", "-p", "use_sim_time:=true", "-p", "other_node:stpes:=1"]
    with tiny_node(env, ros_args):
        pass
    stderr = capfd.readouterr().err
    assert "parameter 'rate_hx' was given but /tiny has no such parameter, so it is ignored; did you mean 'rate_hz'?" in stderr
    assert "parameter 'zzz_unrelated' was given but /tiny has no such parameter, so it is ignored; its parameters are [" in stderr
    assert "'use_sim_time' was given" not in stderr  # rclpy declares it itself
    assert "stpes" not in stderr  # addressed to another node
    assert stderr.count("has no such parameter") == 2


def test_ranges_are_described_and_later_sets_are_checked_over_the_parameter_services(env) -> None:
    """What `ros2 param describe` and `ros2 param set` see: the same rules after start-up."""
    with tiny_node(env) as node:
        setter = Node("setter", context=node.context)
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        executor.add_node(setter)
        client = AsyncParameterClient(setter, f"/{NODE_NAME}")

        def call(future):
            executor.spin_until_future_complete(future, timeout_sec=10.0)
            assert future.done(), "no answer from the parameter services"
            return future.result()

        try:
            assert client.wait_for_services(timeout_sec=10.0)
            rate, steps, mode = call(client.describe_parameters(["rate_hz", "steps", "mode"])).descriptors
            assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (0.5, 1000.0)
            assert (steps.integer_range[0].from_value, steps.integer_range[0].to_value) == (0, 100)
            assert rate.description == "ticks per second" and mode.additional_constraints == "one of 'fast', 'exact'"

            attempts = [Parameter("rate_hz", value=2000.0), Parameter("rate_hz", value=math.nan),
                        Parameter("mode", value="quick"), Parameter("gains", value=[1.0, math.inf]),
                        Parameter("rate_hz", value=50.0), Parameter("gains", value=[0.0, 3.0])]
            results = call(client.set_parameters(attempts)).results
        finally:
            setter.destroy_node()
        assert [result.successful for result in results] == [False, False, False, False, True, True]
        # rclpy checks the descriptor's range before the node's callback sees the value
        assert results[0].reason == "Parameter rate_hz out of range Min: 0.5, Max: 1000.0, value: 2000.0"
        assert results[1].reason == "Parameter rate_hz out of range Min: 0.5, Max: 1000.0, value: nan"
        assert results[2].reason == "parameter 'mode' must be one of 'fast', 'exact'; got 'quick'"
        assert results[3].reason == "parameter 'gains' must be a list of finite doubles, each >= 0; got [1.0, inf]"
        assert node.get_parameter("rate_hz").value == 50.0 and list(node.get_parameter("gains").value) == [0.0, 3.0]
        assert node.get_parameter("mode").value == "fast"


@pytest.mark.parametrize("section", ["tiny", "/tiny", "/**", "**", "/*", "/**/tiny", "/**/*"])
def test_a_params_file_section_that_applies_to_the_node_is_accepted(env, tmp_path, section) -> None:
    path = params_file(tmp_path / "params.yaml", section)
    check_params_files(["--params-file", str(path)], NODE_NAME)
    with tiny_node(env, ["--params-file", str(path)]) as node:  # and rclpy agrees
        assert node.get_parameter("steps").value == 5


@pytest.mark.parametrize(("section", "remaps"), [
    ("/robot/tiny", ["-r", "__ns:=/robot"]),
    ("robot/*", ["-r", "tiny:__ns:=/robot"]),
    ("/renamed", ["-r", "__node:=renamed"]),
])
def test_a_section_for_the_remapped_namespace_or_name_is_accepted(env, tmp_path, section, remaps) -> None:
    path = params_file(tmp_path / "params.yaml", section)
    ros_args = [*remaps, "--params-file", str(path)]
    check_params_files(ros_args, NODE_NAME)
    with tiny_node(env, ros_args) as node:
        assert node.get_parameter("steps").value == 5


def test_a_params_file_without_a_section_for_the_node_is_refused_listing_its_sections(env, tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("tinny:\n  ros__parameters:\n    steps: 5\n/robot/tiny:\n  ros__parameters:\n    steps: 6\n")
    with pytest.raises(ParameterError) as error:
        check_params_files(["-p", "steps:=1", "--params-file", str(path)], NODE_NAME)
    assert str(error.value) == (f"parameters file {path} has no section for node /tiny: its sections are"
                                " ['tinny', '/robot/tiny'] (use 'tiny' or '/**')")
    with tiny_node(env, ["--params-file", str(path)]) as node:  # what rclpy alone would do: ignore the file
        assert node.get_parameter("steps").value == 3


def test_a_missing_or_malformed_params_file_is_refused(tmp_path) -> None:
    with pytest.raises(ParameterError, match=f"parameters file {tmp_path / 'missing.yaml'}: No such file or directory"):
        check_params_files(["--params-file", str(tmp_path / "missing.yaml")], NODE_NAME)
    broken = tmp_path / "broken.yaml"
    broken.write_text("tiny:\n  ros__parameters: [\n")
    with pytest.raises(ParameterError, match=f"parameters file {broken} is not valid YAML"):
        check_params_files(["--params-file", str(broken)], NODE_NAME)
    broken.write_text("- tiny\n")
    with pytest.raises(ParameterError, match=f"parameters file {broken} must map node names to their ros__parameters"):
        check_params_files(["--params-file", str(broken)], NODE_NAME)


def run_mvp(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MVP, *arguments], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_a_node_command_ends_with_the_message_and_status_2_not_a_traceback(env, tmp_path) -> None:
    wrong_type = run_mvp(env, "sim-node", "--ros-args", "-p", "lockstep_timeout_s:=fast")
    assert wrong_type.returncode == 2
    assert wrong_type.stderr.strip() == (
        "mvp sim-node: error: parameter 'lockstep_timeout_s' must be a finite double"
        " from 0.001 to 3600; got 'fast', a string")

    misspelled = run_mvp(env, "sim-node", "--ros-args", "-p", "lockstep_timeout:=1.0")  # then fails: no environment
    assert "parameter 'lockstep_timeout' was given but /mvp_sim has no such parameter, so it is ignored;" \
           " did you mean 'lockstep_timeout_s'?" in misspelled.stderr

    path = params_file(tmp_path / "params.yaml", "mvp_recorde", "duration: 1.0")
    wrong_section = run_mvp(env, "record", "--out", str(tmp_path / "bag"), "--ros-args", "--params-file", str(path))
    assert wrong_section.returncode == 2
    assert wrong_section.stderr.strip() == (f"mvp record: error: parameters file {path} has no section for node"
                                            " /mvp_recorder: its sections are ['mvp_recorde'] (use 'mvp_recorder' or '/**')")
    assert "Traceback" not in wrong_type.stderr + misspelled.stderr + wrong_section.stderr
