"""The same tree installs as an ament_python package with colcon and as a pip package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if (REPO / line).is_file()]


def test_package_xml_declares_ament_python_and_runtime_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "mvp_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {element.text for element in root.findall("exec_depend")}
    for dependency in ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "trajectory_msgs",
                       "diagnostic_msgs", "std_srvs"):
        assert dependency in exec_depends
    assert {element.text for element in root.findall("test_depend")} >= {"python3-pytest"}
    assert (REPO / "resource" / "mvp_ros").is_file()


def test_learning_core_never_imports_rclpy():
    for package in ("policy", "data", "rl", "sim"):
        for path in (REPO / "mvp_ros" / package).rglob("*.py"):
            text = path.read_text()
            assert "import rclpy" not in text and "from rclpy" not in text, f"{path} imports rclpy"


@pytest.mark.slow
def test_colcon_builds_the_package_in_a_fresh_workspace(tmp_path):
    source = tmp_path / "ws" / "src" / "mvp_ros"
    for name in tracked_files():
        destination = source / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination)
    workspace = tmp_path / "ws"
    environment = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    build = subprocess.run([str(VENV_BIN / "colcon"), "build", "--event-handlers", "console_direct-"],
                           cwd=workspace, env=environment, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr

    prefix = workspace / "install" / "mvp_ros"
    share = prefix / "share" / "mvp_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "mvp_ros").is_file()
    assert (share / "package.xml").is_file()
    for directory in ("config", "launch"):
        for path in (REPO / directory).glob("*"):
            if path.suffix in (".yaml", ".py"):
                assert (share / directory / path.name).is_file(), f"{directory}/{path.name} not installed"
    for path in (REPO / "models").glob("*/*.*"):
        assert (share / "models" / path.parent.name / path.name).is_file(), f"{path} not installed"
    executable = prefix / "lib" / "mvp_ros" / "mvp"  # where `ros2 run mvp_ros mvp` looks
    assert executable.is_file()

    site_packages = next(prefix.glob("lib/python3*/site-packages"))
    installed = subprocess.run([sys.executable, "-c", "import mvp_ros, sys; print(mvp_ros.__file__)"],
                               env={**environment, "PYTHONPATH": str(site_packages)}, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert str(site_packages) in installed.stdout
    contract = subprocess.run([sys.executable, "-c", "from mvp_ros.ros.demo import DEFAULT_CONTRACT; print(DEFAULT_CONTRACT)"],
                              env={**environment, "PYTHONPATH": str(site_packages)}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert contract.stdout.strip() == str(share / "config" / "panda_sim_contract.yaml"), contract.stderr
    help_text = subprocess.run([sys.executable, str(executable), "--help"], capture_output=True, text=True,
                               env={**environment, "PYTHONPATH": str(site_packages)}, timeout=120)
    assert help_text.returncode == 0 and "train" in help_text.stdout, help_text.stderr
