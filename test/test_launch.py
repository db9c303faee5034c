"""The launch files and the nodes' parameter files.

Without a ROS install (launch and launch_ros are not on PyPI) the launch files are read as Python
syntax trees: every executable they start must be a console script of setup.py, every file they
name must be in the repository (and installed by setup.py), every parameter they set must be one
the node declares. Every node takes the `namespace` argument and the topic names the launch files
pass are relative, so they move with it; a lifecycle node is started as launch_ros's LifecycleNode,
which the package's shared launch actions (mvp_ros/ros/launch_actions.py) configure and then
activate. The parameter files have the one section `/**`, and rcl's own parser applies them to the
nodes under any name and namespace. Where launch_ros is importable, the launch descriptions are
also run.
"""
from __future__ import annotations

import ast
import asyncio
import importlib
import random
import re
import sys
import threading
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.context import Context
from rclpy.lifecycle import LifecycleNode
from rclpy.parameter import Parameter, parameter_dict_from_yaml_file

from mvp_ros.ros import policy_node, sim_node
from mvp_ros.ros.parameters import check_params_files

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import REPO, Peer, domain_environment  # noqa: E402
from tiny_policy import PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
LAUNCH_ACTIONS = REPO / "mvp_ros" / "ros" / "launch_actions.py"
AUTOSTART_ACTIONS = "lifecycle_autostart_actions"
PARAMETER_FILES = {"mvp_policy": REPO / "config" / "policy_node.yaml", "mvp_sim": REPO / "config" / "sim_node.yaml"}
NODE_MODULES = {"mvp_policy": policy_node, "mvp_sim": sim_node}
NODE_PARAMETERS = {  # node name -> parameter -> type; the simulation is the clock, so only the policy takes use_sim_time
    node: {name: spec.default if isinstance(spec.default, Parameter.Type) else Parameter.Type.from_parameter_value(spec.default)
           for name, spec in module.PARAMETERS.items()} | extra
    for node, module, extra in (("mvp_policy", policy_node, {"use_sim_time": Parameter.Type.BOOL}), ("mvp_sim", sim_node, {}))
}
LIFECYCLE_NODES = {  # the nodes whose class is an rclpy LifecycleNode
    node for node, module in NODE_MODULES.items()
    if any(isinstance(value, type) and issubclass(value, LifecycleNode) and value.__module__ == module.__name__
           for value in vars(module).values())
}
REQUIRED_ARGUMENTS = {"policy.launch.py": {"checkpoint", "params_file", "device", "use_sim_time", "namespace", "autostart"},
                      "sim.launch.py": {"checkpoint", "namespace", "autostart"}}


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry_points."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict(re.fullmatch(r"\s*(\S+)\s*=\s*(\S+)\s*", line).groups() for line in scripts)
    raise AssertionError("setup.py has no entry_points")


def call_name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and call_name(node) == name]


def node_calls(tree: ast.AST) -> list[ast.Call]:
    """The Node and LifecycleNode actions."""
    return calls(tree, "Node") + calls(tree, "LifecycleNode")


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def assignments(tree: ast.AST) -> dict[str, ast.AST]:
    """variable -> the expression assigned to it (`name = ...` with one target)."""
    return {node.targets[0].id: node.value for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}


def resolved(expression: ast.AST | None, variables: dict[str, ast.AST]) -> ast.AST | None:
    """The expression a variable stands for (through chains of variables); others unchanged."""
    while isinstance(expression, ast.Name) and expression.id in variables:
        expression = variables[expression.id]
    return expression


def variable_of(call: ast.Call, variables: dict[str, ast.AST]) -> str | None:
    return next((name for name, value in variables.items() if value is call), None)


def is_launch_configuration(expression: ast.AST | None, argument: str) -> bool:
    return (isinstance(expression, ast.Call) and call_name(expression) == "LaunchConfiguration"
            and ast.literal_eval(expression.args[0]) == argument)


def parameter_overrides(node: ast.Call) -> dict[str, ast.AST]:
    """The dict entries of a node's `parameters` list: parameter name -> value expression."""
    return {ast.literal_eval(key): value for entry in keyword(node, "parameters").elts if isinstance(entry, ast.Dict)
            for key, value in zip(entry.keys, entry.values)}


def share_paths(tree: ast.AST) -> list[Path]:
    """PathJoinSubstitution([share, "config", "x.yaml"]) -> config/x.yaml in the repository."""
    paths = []
    for call in calls(tree, "PathJoinSubstitution"):
        parts = [element.value for element in call.args[0].elts[1:]]
        paths.append(REPO.joinpath(*parts))
    return paths


def change_states(tree: ast.AST, target: str) -> list[ast.Call]:
    """ChangeState events whose lifecycle_node_matcher is matches_action(<target variable>)."""
    found = []
    for call in calls(tree, "ChangeState"):
        matcher = keyword(call, "lifecycle_node_matcher")
        if (isinstance(matcher, ast.Call) and call_name(matcher) == "matches_action"
                and isinstance(matcher.args[0], ast.Name) and matcher.args[0].id == target):
            found.append(call)
    return found


def transition(change_state: ast.Call) -> str:
    """'TRANSITION_CONFIGURE' for transition_id=Transition.TRANSITION_CONFIGURE."""
    value = keyword(change_state, "transition_id")
    return value.attr if isinstance(value, ast.Attribute) else ast.dump(value)


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda path: path.name)
def test_launch_file_names_existing_executables_files_and_parameters(launch_file: Path) -> None:
    tree = ast.parse(launch_file.read_text())
    scripts = console_scripts()
    declared = {call.args[0].value for call in calls(tree, "DeclareLaunchArgument")}
    used = {call.args[0].value for call in calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"{launch_file.name} uses undeclared launch arguments {used - declared}"
    assert REQUIRED_ARGUMENTS.get(launch_file.name, set()) <= declared

    nodes = node_calls(tree)
    assert nodes, f"{launch_file.name} starts no node"
    for node in nodes:
        package, executable, name = (ast.literal_eval(keyword(node, k)) for k in ("package", "executable", "name"))
        assert package == "mvp_ros"
        assert executable in scripts, (
            f"{launch_file.name} starts {executable!r}, which is no console script of setup.py: add"
            f" '{executable} = mvp_ros.ros.{executable}:main' to entry_points['console_scripts']")
        module_name, function = scripts[executable].split(":")
        assert callable(getattr(importlib.import_module(module_name), function))
        assert importlib.import_module(module_name).NODE_NAME == name
        for parameter in parameter_overrides(node):
            assert parameter in NODE_PARAMETERS[name], f"{launch_file.name}: {name} declares no parameter {parameter!r}"

    setup = (REPO / "setup.py").read_text()
    for path in share_paths(tree):
        relative = path.relative_to(REPO)
        assert path.exists(), f"{launch_file.name} names {relative}, which does not exist"
        installed_by = {"config": 'glob("config/*.yaml")', "models": 'glob("models/*/*.*")'}[relative.parts[0]]
        assert installed_by in setup, f"setup.py does not install {relative}"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda path: path.name)
def test_launch_file_nodes_take_the_namespace_argument_and_relative_topic_names(launch_file: Path) -> None:
    tree = ast.parse(launch_file.read_text())
    variables = assignments(tree)
    for node in node_calls(tree):
        name = ast.literal_eval(keyword(node, "name"))
        assert is_launch_configuration(resolved(keyword(node, "namespace"), variables), "namespace"), (
            f"{launch_file.name}: {name} must take namespace=LaunchConfiguration('namespace')")
        for parameter, value in parameter_overrides(node).items():
            value = resolved(value, variables)
            if parameter.endswith("_topic") and isinstance(value, ast.Constant) and value.value:
                assert not value.value.startswith("/"), (
                    f"{launch_file.name}: {name}'s {parameter} {value.value!r} is absolute, so it stays put under a"
                    f" namespace; write it relative ({value.value.lstrip('/')!r})")


def is_autostart_condition(expression: ast.AST | None) -> bool:
    return (isinstance(expression, ast.Call) and call_name(expression) == "IfCondition"
            and is_launch_configuration(expression.args[0], "autostart"))


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda path: path.name)
def test_lifecycle_nodes_start_as_LifecycleNode_that_launch_configures_then_activates(launch_file: Path) -> None:
    """Each lifecycle node is a LifecycleNode whose transitions the package's lifecycle_autostart_actions
    drive under the `autostart` argument (what those actions do: the tests of launch_actions below)."""
    tree = ast.parse(launch_file.read_text())
    variables = assignments(tree)
    returned = {name.id for call in calls(tree, "LaunchDescription") for name in ast.walk(call) if isinstance(name, ast.Name)}
    description_calls = {id(call) for description in calls(tree, "LaunchDescription") for call in ast.walk(description)}
    imported = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    for node in node_calls(tree):
        name = ast.literal_eval(keyword(node, "name"))
        if name not in LIFECYCLE_NODES:
            assert call_name(node) == "Node", f"{launch_file.name}: {name} is no lifecycle node; start it with Node"
            continue
        assert call_name(node) == "LifecycleNode", (
            f"{launch_file.name}: {name} is a lifecycle node; start it with launch_ros.actions.LifecycleNode so that launch"
            " can drive its transitions")
        overrides = parameter_overrides(node)
        assert "autostart" in overrides and ast.literal_eval(overrides["autostart"]) is False, (
            f"{launch_file.name}: {name} must get autostart: False, so that launch alone drives its transitions")
        target = variable_of(node, variables)
        assert target in returned, f"{launch_file.name}: {name} is not in the returned LaunchDescription"

        assert ("mvp_ros.ros.launch_actions", AUTOSTART_ACTIONS) in imported, (
            f"{launch_file.name}: import {AUTOSTART_ACTIONS} from mvp_ros.ros.launch_actions")
        autostarts = [call for call in calls(tree, AUTOSTART_ACTIONS)
                      if isinstance(call.args[0], ast.Name) and call.args[0].id == target]
        assert len(autostarts) == 1, f"{launch_file.name}: launch {AUTOSTART_ACTIONS}({target}, ...) once for {name}"
        assert is_autostart_condition(resolved(autostarts[0].args[1], variables)), (
            f"{launch_file.name}: {AUTOSTART_ACTIONS} for {name} must take IfCondition(LaunchConfiguration('autostart'))")
        assert id(autostarts[0]) in description_calls, (
            f"{launch_file.name}: the actions of {AUTOSTART_ACTIONS} for {name} are not in the returned LaunchDescription")


def test_the_autostart_actions_configure_at_launch_then_activate_once_configured() -> None:
    """launch_actions.lifecycle_autostart_actions(node, condition), read as a syntax tree: a handler that
    activates `node` on configuring -> inactive only (not after a deactivate), registered before the
    configure request goes out, both under `condition`."""
    tree = ast.parse(LAUNCH_ACTIONS.read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == AUTOSTART_ACTIONS)
    target, condition_parameter = (argument.arg for argument in function.args.args)
    variables = assignments(function)

    handlers = [call for call in calls(function, "OnStateTransition")
                if isinstance(keyword(call, "target_lifecycle_node"), ast.Name)
                and keyword(call, "target_lifecycle_node").id == target]
    assert len(handlers) == 1, "one OnStateTransition handler (activate once configured)"
    handler = handlers[0]
    states = tuple(None if keyword(handler, state) is None else ast.literal_eval(keyword(handler, state))
                   for state in ("start_state", "goal_state"))
    assert states == ("configuring", "inactive"), f"activate on configuring -> inactive only, not after a deactivate: {states}"
    assert ast.literal_eval(keyword(handler, "handle_once")) is True
    activations = [call for call in change_states(handler, target) if transition(call) == "TRANSITION_ACTIVATE"]
    assert len(activations) == 1, "the handler must emit ChangeState(TRANSITION_ACTIVATE) for the node"
    inside_handler = {id(call) for call in ast.walk(handler)}
    configures = [call for call in change_states(function, target)
                  if transition(call) == "TRANSITION_CONFIGURE" and id(call) not in inside_handler]
    assert len(configures) == 1, "launch must emit ChangeState(TRANSITION_CONFIGURE) for the node at start"

    actions = {  # the actions that carry the transitions, in the order launch must run them
        "RegisterEventHandler": next(call for call in calls(function, "RegisterEventHandler") if handler in call.args),
        "EmitEvent": next(call for call in calls(function, "EmitEvent") if keyword(call, "event") is configures[0]),
    }
    returns = [node.value for node in ast.walk(function) if isinstance(node, ast.Return)]
    assert len(returns) == 1 and isinstance(returns[0], ast.List)
    assert [resolved(element, variables) for element in returns[0].elts] == list(actions.values()), (
        "return the handler's registration, then the configure event")
    for kind, action in actions.items():
        condition = keyword(action, "condition")
        assert isinstance(condition, ast.Name) and condition.id == condition_parameter, (
            f"the {kind} must have condition={condition_parameter}")


def test_the_autostart_actions_build_with_launch_ros() -> None:
    pytest.importorskip("launch_ros", reason="launch_ros is not installed: it comes with a ROS 2 install, not from PyPI")
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.conditions import IfCondition
    from launch_ros.actions import LifecycleNode as LifecycleNodeAction
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    from mvp_ros.ros.launch_actions import lifecycle_autostart_actions

    node = LifecycleNodeAction(package="mvp_ros", executable="policy_node", name="mvp_policy", namespace="")
    condition = IfCondition("true")
    registration, configure = lifecycle_autostart_actions(node, condition)
    assert isinstance(registration, RegisterEventHandler) and isinstance(registration.event_handler, OnStateTransition)
    assert isinstance(configure, EmitEvent) and isinstance(configure.event, ChangeState)
    assert configure.event.transition_id == Transition.TRANSITION_CONFIGURE and configure.event.lifecycle_node_matcher(node)
    assert registration.condition is condition and configure.condition is condition


def test_no_module_of_the_package_but_launch_actions_imports_launch() -> None:
    """The node processes never load launch or launch_ros: only launch files import launch_actions."""
    launch_modules = {"launch", "launch_ros", "mvp_ros.ros.launch_actions"}
    for path in sorted((REPO / "mvp_ros").rglob("*.py")):
        if path == LAUNCH_ACTIONS:
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
        offending = {name for name in imported if name in launch_modules or name.split(".")[0] in {"launch", "launch_ros"}}
        assert not offending, f"{path.relative_to(REPO)} imports {sorted(offending)}"


@pytest.mark.parametrize("node", sorted(PARAMETER_FILES))
def test_parameter_files_set_declared_parameters_with_their_types(node: str) -> None:
    path = PARAMETER_FILES[node]
    assert list(yaml.safe_load(path.read_text())) == ["/**"], (
        f"{path.name} must have the one section '/**', which applies under any node name and namespace")
    parameters = {name: Parameter.from_parameter_msg(msg) for name, msg in
                  parameter_dict_from_yaml_file(str(path), use_wildcard=True).items()}
    declared = NODE_PARAMETERS[node]
    for name, parameter in parameters.items():
        assert name in declared, f"{path.name} sets {name!r}, which {node} does not declare"
        assert parameter.type_ == declared[name], f"{path.name}: {name} is {parameter.type_.name}, declared {declared[name].name}"
    missing = set(declared) - set(parameters) - {"max_delta"}  # max_delta is unset on purpose (the contract's)
    assert not missing, f"{path.name} does not document {missing}"
    for name in ("checkpoint", "contract"):
        assert (REPO / parameters[name].value).exists(), f"{path.name}: {name} {parameters[name].value} does not exist"


@pytest.mark.parametrize("node", sorted(PARAMETER_FILES))
@pytest.mark.parametrize("remaps", [[], ["-r", "__ns:=/robot1"], ["-r", "__ns:=/robot1/arm", "-r", "__node:=left"]],
                         ids=["plain", "namespace", "namespace_and_name"])
def test_parameter_files_apply_under_any_namespace_and_node_name(node: str, remaps: list[str]) -> None:
    """What launch's `namespace:=` and a renamed node do: the node's own check accepts the file, and
    rcl gives the node every value in it."""
    path = PARAMETER_FILES[node]
    ros_args = ["--params-file", str(path), *remaps]
    check_params_files(ros_args, node)
    expected = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    context = Context()
    rclpy.init(args=["test", "--ros-args", *ros_args], context=context, domain_id=random.SystemRandom().randint(101, 200))
    try:
        ros_node = rclpy.create_node(node, context=context, automatically_declare_parameters_from_overrides=True,
                                     start_parameter_services=False, enable_rosout=False)
        try:
            assert {name: ros_node.get_parameter(name).value for name in expected if ros_node.has_parameter(name)} == expected, (
                f"{path.name} does not reach {ros_node.get_fully_qualified_name()}")
        finally:
            ros_node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.slow
@pytest.mark.parametrize("launch_file", ["policy.launch.py", "sim.launch.py"])
def test_launch_descriptions_run(tmp_path, monkeypatch, launch_file: str) -> None:
    """With a ROS 2 install and the package built and sourced: the nodes come up and the policy activates."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installed: it comes with a ROS 2 install, not from PyPI")
    from launch import LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from lifecycle_msgs.srv import GetState

    env = domain_environment()
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "MUJOCO_GL"):
        monkeypatch.setenv(name, env[name])
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny", contract=PANDA_SIM_CONTRACT)
    arguments = {"checkpoint": str(checkpoint), "device": "cpu"}
    service = LaunchService()
    service.include_launch_description(IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / launch_file)), launch_arguments=arguments.items()))
    runner = threading.Thread(target=lambda: asyncio.run(service.run_async(handle_signals=False)), daemon=True)
    runner.start()
    peer = Peer(env)
    expected = {"mvp_policy", "mvp_sim"} if launch_file == "sim.launch.py" else {"mvp_policy"}
    try:
        peer.wait_for(lambda: expected <= set(peer.node.get_node_names()), 120, f"nodes {expected}")
        peer.wait_for(lambda: peer.call(GetState, "/mvp_policy/get_state").current_state.label == "active",
                      60, "the policy node to be active")
    finally:
        service.shutdown()
        runner.join(timeout=30)
        peer.close()
