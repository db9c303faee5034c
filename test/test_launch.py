"""The launch files and the nodes' parameter files.

Without a ROS install (launch and launch_ros are not on PyPI) the launch files are read as Python
syntax trees: every executable they start must be a console script of setup.py, every file they
name must be in the repository (and installed by setup.py), every parameter they set must be one
the node declares. Where launch_ros is importable, the launch descriptions are also run.
"""
from __future__ import annotations

import ast
import asyncio
import importlib
import re
import sys
import threading
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter, parameter_dict_from_yaml_file

from mvp_ros.ros import policy_node, sim_node

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import REPO, Peer, domain_environment  # noqa: E402
from tiny_policy import PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
PARAMETER_FILES = {"mvp_policy": REPO / "config" / "policy_node.yaml", "mvp_sim": REPO / "config" / "sim_node.yaml"}
NODE_PARAMETERS = {  # node name -> parameter -> type; the simulation is the clock, so only the policy takes use_sim_time
    node: {name: spec.default if isinstance(spec.default, Parameter.Type) else Parameter.Type.from_parameter_value(spec.default)
           for name, spec in module.PARAMETERS.items()} | extra
    for node, module, extra in (("mvp_policy", policy_node, {"use_sim_time": Parameter.Type.BOOL}), ("mvp_sim", sim_node, {}))
}
REQUIRED_ARGUMENTS = {"policy.launch.py": {"checkpoint", "params_file", "device", "use_sim_time"}}


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


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def share_paths(tree: ast.AST) -> list[Path]:
    """PathJoinSubstitution([share, "config", "x.yaml"]) -> config/x.yaml in the repository."""
    paths = []
    for call in calls(tree, "PathJoinSubstitution"):
        parts = [element.value for element in call.args[0].elts[1:]]
        paths.append(REPO.joinpath(*parts))
    return paths


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda path: path.name)
def test_launch_file_names_existing_executables_files_and_parameters(launch_file: Path) -> None:
    tree = ast.parse(launch_file.read_text())
    scripts = console_scripts()
    declared = {call.args[0].value for call in calls(tree, "DeclareLaunchArgument")}
    used = {call.args[0].value for call in calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"{launch_file.name} uses undeclared launch arguments {used - declared}"
    assert REQUIRED_ARGUMENTS.get(launch_file.name, set()) <= declared

    nodes = calls(tree, "Node")
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
        for entry in keyword(node, "parameters").elts:
            if isinstance(entry, ast.Dict):
                for key in entry.keys:
                    assert key.value in NODE_PARAMETERS[name], f"{launch_file.name}: {name} declares no parameter {key.value!r}"

    setup = (REPO / "setup.py").read_text()
    for path in share_paths(tree):
        relative = path.relative_to(REPO)
        assert path.exists(), f"{launch_file.name} names {relative}, which does not exist"
        installed_by = {"config": 'glob("config/*.yaml")', "models": 'glob("models/*/*.*")'}[relative.parts[0]]
        assert installed_by in setup, f"setup.py does not install {relative}"


@pytest.mark.parametrize("node", sorted(PARAMETER_FILES))
def test_parameter_files_set_declared_parameters_with_their_types(node: str) -> None:
    path = PARAMETER_FILES[node]
    assert list(yaml.safe_load(path.read_text())) == [node]
    parameters = {name: Parameter.from_parameter_msg(msg) for name, msg in
                  parameter_dict_from_yaml_file(str(path), target_nodes=[node]).items()}
    declared = NODE_PARAMETERS[node]
    for name, parameter in parameters.items():
        assert name in declared, f"{path.name} sets {name!r}, which {node} does not declare"
        assert parameter.type_ == declared[name], f"{path.name}: {name} is {parameter.type_.name}, declared {declared[name].name}"
    missing = set(declared) - set(parameters) - {"max_delta"}  # max_delta is unset on purpose (the contract's)
    assert not missing, f"{path.name} does not document {missing}"
    for name in ("checkpoint", "contract"):
        assert (REPO / parameters[name].value).exists(), f"{path.name}: {name} {parameters[name].value} does not exist"


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
