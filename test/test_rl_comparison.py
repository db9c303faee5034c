"""benchmarks/rl_comparison.py end to end at its `--quick` scale: it writes the mixed-quality data,
trains BC, MVP-RL and QC with `mvp train`, evaluates every stage with `mvp eval` on the same seeds,
writes the JSON and the plot, and a second run finds every stage done and runs nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "rl_comparison.py"


def run_quick(tmp_path: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--dataset", str(tmp_path / "lift_mixed.hdf5"),
         "--work-dir", str(tmp_path / "runs"), "--json", str(tmp_path / "comparison.json"),
         "--plot", str(tmp_path / "comparison.png")],
        capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_comparison_trains_evaluates_and_resumes(tmp_path):
    first = run_quick(tmp_path)
    with h5py.File(tmp_path / "lift_mixed.hdf5") as file:
        assert file.attrs["quality"] == "mixed" and len(file["data"]) == 6
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert result["scale_name"] == "quick" and result["scale"]["online_stages"] == [8, 16]
    methods = {method["method"]: method for method in result["methods"]}
    assert list(methods) == ["bc", "bc-flow", "mvp-rl", "qc"]
    for name in ("bc", "bc-flow"):
        assert [point["env_steps"] for point in methods[name]["points"]] == [0]
        assert methods[name]["best_of"] == 1 and methods[name]["online_env_steps_per_s"] is None
    seeds = result["seeds"]["evaluation"]
    assert seeds == [1000000, 1000001]
    for name in ("mvp-rl", "qc"):
        method = methods[name]
        assert [point["env_steps"] for point in method["points"]] == [0, 8, 16]
        assert [point["updates"] for point in method["points"]] == [12, 20, 28]
        assert method["best_of"] == 4 and method["online_env_steps_per_s"] > 0
        state = json.loads((tmp_path / "runs" / name / "training_state.json").read_text())
        assert state["step"] == 28 and state["online"]["env_steps"] == 16
        assert state["online"]["chunk_left"] == []  # the next stage starts a new episode, not this chunk's rest
        assert all(point["online_episodes"] >= 0 and 0 <= point["online_success_rate"] <= 1
                   for point in method["points"][1:])
        online_stage = method["points"][2]["commands"][0]
        assert "--resume" in online_stage and "--online-steps 16" in online_stage
    for method in methods.values():
        assert method["offline_updates_per_s"] > 0 and method["inference_ms_p50"] > 0
        for point in method["points"]:
            assert min(result["machine"]["load_average_1min_range"]) <= min(point["load_average_1min"])
            assert point["seeds"] == seeds and 0 <= point["successes"] <= point["episodes"] == 2
            assert point["commands"][-1].startswith("mvp eval") and f"--best-of {method['best_of']}" in point["commands"][-1]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.count("$ mvp train") == 8 and first.count("$ mvp demos") == 1

    again = run_quick(tmp_path)
    assert "$ mvp" not in again
    assert json.loads((tmp_path / "comparison.json").read_text())["methods"] == result["methods"]
