"""`mvp demo`: two node processes over DDS, seeded episodes through the topics, the summary and
its JSON. With the shipped policy (models/lift_lowdim) it must succeed, episode for episode as
`mvp eval` on the same seeds."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mvp_ros.cli import main as mvp_main

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import REPO  # noqa: E402
from tiny_policy import PANDA_SIM_CONTRACT, write_tiny_checkpoint  # noqa: E402

SHIPPED = REPO / "models" / "lift_lowdim"
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
@pytest.mark.skipif(not SHIPPED.is_dir(), reason=f"the shipped policy {SHIPPED} is not in this checkout yet")
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
