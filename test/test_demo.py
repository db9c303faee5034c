"""`mvp demo`: two node processes over DDS, seeded episodes through the topics, the summary and
its JSON. With the shipped policies (models/lift_lowdim; models/lift_image, its cameras sent as
sensor_msgs/Image or CompressedImage) it must succeed, episode for episode as `mvp eval` on the
same seeds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mvp_ros.cli import main as mvp_main

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import MVP, REPO  # noqa: E402
from tiny_policy import PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

SHIPPED = REPO / "models" / "lift_lowdim"
CAMERA_POLICY = REPO / "models" / "lift_image"
CAMERA_SEED = 1_000_000  # the first seed of its committed evaluation (models/lift_image/eval_50.json)
REQUIRED_KEYS = {"success_rate", "episodes", "tick_latency_ms_p50", "tick_latency_ms_p99", "missed_ticks"}


def run_demo(capsys, checkpoint: Path, out: Path, *extra: str) -> tuple[dict, str]:
    assert mvp_main(["demo", "--checkpoint", str(checkpoint), "--json", str(out), "--no-progress",
                     "--device", "cpu", "--log-dir", str(out.parent / "logs"), *extra]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_seeded_episodes_over_ros_and_writes_the_summary(tmp_path, capsys) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny", contract=PANDA_SIM_CONTRACT)
    summary, stdout = run_demo(capsys, checkpoint, tmp_path / "demo.json", "--episodes", "2", "--seed", "5",
                               "--max-steps", "8")
    assert REQUIRED_KEYS <= set(summary)
    assert summary["episodes"] == 2 and summary["seeds"] == [5, 6]
    assert summary["episode_steps"] == [8, 8] and summary["episode_success"] == [False, False]  # untrained
    assert summary["success_rate"] == summary["successes"] / summary["episodes"] == 0.0
    assert summary["ticks"] == 2 * (8 + 1)  # every step, and each episode's final observation
    assert summary["missed_ticks"] == summary["stale_ticks"] == summary["held_steps"] == 0  # lockstep
    assert 0 < summary["tick_latency_ms_p50"] <= summary["tick_latency_ms_p99"]
    assert summary["node_exit_codes"] == {"sim": 0, "policy": 0}
    assert "success rate 0.000 (0/2" in stdout and "tick latency (observation ready -> command published): p50" in stdout


def test_demo_reports_bad_arguments_before_starting_anything(tmp_path, capsys) -> None:
    assert mvp_main(["demo", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert f"checkpoint directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny")
    assert mvp_main(["demo", "--checkpoint", str(checkpoint), "--episodes", "0"]) == 2
    assert "--episodes must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_the_shipped_policy_succeeds_over_ros_as_in_mvp_eval(tmp_path, capsys) -> None:
    episodes = ["--episodes", "3", "--seed", "0"]
    demo, _ = run_demo(capsys, SHIPPED, tmp_path / "demo.json", *episodes)
    assert mvp_main(["eval", "--checkpoint", str(SHIPPED), "--json", str(tmp_path / "eval.json"), "--device", "cpu",
                     "--no-progress", *episodes]) == 0
    offline = json.loads((tmp_path / "eval.json").read_text())
    assert demo["successes"] >= 2
    # Lockstep on sim time: the ROS loop is the offline loop, episode for episode.
    assert demo["episode_success"] == offline["episode_success"]
    assert demo["episode_steps"] == offline["episode_steps"]


@pytest.fixture(scope="module")
def camera_policy_offline(tmp_path_factory) -> dict:
    """`mvp eval` of the camera policy's first evaluation episode, with temporal ensembling as the demo runs it."""
    out = tmp_path_factory.mktemp("camera_eval") / "eval.json"
    assert mvp_main(["eval", "--checkpoint", str(CAMERA_POLICY), "--json", str(out), "--device", "cpu", "--no-progress",
                     "--episodes", "1", "--seed", str(CAMERA_SEED), "--temporal-ensemble"]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("contract, messages", [
    ([], "sensor_msgs/msg/Image"),
    (["--contract", str(REPO / "config" / "panda_sim_camera_compressed_contract.yaml")],
     "sensor_msgs/msg/CompressedImage (png)"),
], ids=["Image", "CompressedImage"])
def test_the_camera_policy_succeeds_over_ros_as_in_mvp_eval(tmp_path, capsys, camera_policy_offline, contract,
                                                            messages) -> None:
    """The cameras and proprioception only, over DDS: the simulation publishes no cube pose, and PNG
    decodes to the simulator's pixels, so either way the ROS loop is the offline loop."""
    demo, stdout = run_demo(capsys, CAMERA_POLICY, tmp_path / "demo.json", "--episodes", "1", "--seed", str(CAMERA_SEED),
                            "--temporal-ensemble", *contract)
    assert demo["camera_messages"] == {"agentview_image": messages, "robot0_eye_in_hand_image": messages}
    if not contract:
        assert demo["contract"] == str(REPO / "config" / "panda_sim_camera_contract.yaml")
    sim_log = (tmp_path / "logs" / "sim_node.log").read_text()
    assert "/object_state" not in sim_log and "/agentview/image_raw" in sim_log  # the topics it publishes
    assert demo["episode_success"] == camera_policy_offline["episode_success"] == [True]
    assert demo["episode_steps"] == camera_policy_offline["episode_steps"]
    assert demo["missed_ticks"] == demo["stale_ticks"] == demo["held_steps"] == 0
    assert f"agentview_image as {messages}" in stdout


def running(fragment: str) -> dict[int, str]:
    """pid -> command line of every running process whose command line holds `fragment`."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        if fragment in text:
            found[int(cmdline.parent.name)] = text
    return found


def text_of(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_nodes_and_the_demo_says_how_it_ended(tmp_path, sig) -> None:
    """`kill` (SIGTERM) or Ctrl-C (SIGINT) while episodes run: the demo passes the signal on to both
    nodes, waits for them, reports their exit statuses and exits with 128 + the signal number."""
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny", contract=PANDA_SIM_CONTRACT)
    started_with_it = f"--checkpoint {checkpoint}"  # the demo's and its nodes' command lines
    logs, stdout, stderr = tmp_path / "logs", tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("w") as out, stderr.open("w") as err:
        demo = subprocess.Popen([*MVP, "demo", "--checkpoint", str(checkpoint), "--episodes", "1000", "--max-steps", "10",
                                 "--device", "cpu", "--no-progress", "--log-dir", str(logs)],
                                cwd=REPO, stdout=out, stderr=err,
                                env=os.environ | {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    try:
        # Generous limits: both nodes import torch or robosuite first, slow when the cores are shared.
        wait_for(lambda: "episode 1 (seed 0)" in text_of(logs / "sim_node.log"), 150, "the first episode to end")
        nodes = {pid: command for pid, command in running(started_with_it).items() if pid != demo.pid}
        (sim_pid,) = [pid for pid, command in nodes.items() if " sim-node " in command]
        (policy_pid,) = [pid for pid, command in nodes.items() if " policy-node " in command]
        assert len(nodes) == 2

        demo.send_signal(sig)
        assert demo.wait(timeout=60) == 128 + sig
        assert running(started_with_it) == {}
    finally:  # whatever failed, leave nothing of this test running
        for pid in running(started_with_it):
            os.kill(pid, signal.SIGKILL)
    assert f"sim node pid {sim_pid}, policy node pid {policy_pid}, node logs in {logs}" in stdout.read_text()
    assert "Traceback" not in stderr.read_text()
    assert stderr.read_text().strip().splitlines()[-1] == (
        f"demo: stopped by {sig.name}, passed on to the nodes: sim node (pid {sim_pid}) exit status 0,"
        f" policy node (pid {policy_pid}) exit status 0; node logs in {logs}")
