"""docs/rl_online.md's side-by-side comparison keeps the figures of benchmarks/results/online_rl_comparison.json
(table, scale and cost sentences, formatted as here), and the benchmark's code path runs at a tiny budget
and writes a JSON of that structure with real numbers."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULT = ROOT / "benchmarks/results/online_rl_comparison.json"
DOC = ROOT / "docs/rl_online.md"


def return_cell(point: dict) -> str:
    return f"{point['mean']:.0f} ({point['min']:.0f} to {point['max']:.0f})"


def table_lines(result: dict) -> list[str]:
    steps = [point["env_steps"] for point in result["methods"][0]["tasks"][result["envs"][0]]["curve"]]
    header = ("| method | task | " + " | ".join(f"return at {step:,} steps" for step in steps)
              + " | updates per CPU second | CPU ms per action (p50) | updates per second (wall) |")
    lines = [header, "|---" * (len(steps) + 5) + "|"]
    for method in result["methods"]:
        for env, task in method["tasks"].items():
            lines.append(f"| {method['label']} | {env} | " + " | ".join(return_cell(point) for point in task["curve"])
                         + f" | {task['updates_per_cpu_second']:.1f} | {task['act_cpu_ms_p50']:.2f} | "
                         f"{task['updates_per_second']:.1f} |")
    return lines


def scale_sentence(result: dict) -> str:
    scale = result["scale"]
    return (f"{scale['online_steps']:,} environment steps per run, the first {scale['learning_starts']:,} uniformly "
            f"random, then one update per step ({scale['online_steps'] - scale['learning_starts']:,} updates); "
            f"batch {scale['batch_size']}; every network {scale['depth']}x{scale['hidden_dim']}; "
            f"{scale['eval_episodes']} evaluation episodes every {scale['eval_every']:,} steps (seeds "
            f"{result['evaluation_seeds'][0]}-{result['evaluation_seeds'][-1]}); seeds "
            f"{', '.join(map(str, result['seeds']))}")


def cost_sentence(result: dict) -> str:
    low, high = result["machine"]["load_average_1min_range"]
    return (f"{len(result['seeds']) * len(result['envs']) * len(result['methods'])} runs in "
            f"{result['wall_seconds'] / 60:.0f} minutes of wall-clock time and {result['cpu_seconds'] / 60:.0f} "
            f"minutes of CPU time on one thread ({result['machine']['cpu']}, {result['machine']['cpu_count']} cores "
            f"shared with other work: load average {low:.1f} to {high:.1f})")


def test_the_doc_keeps_the_comparison_figures():
    result = json.loads(RESULT.read_text())
    doc = DOC.read_text()
    assert "\n".join(table_lines(result)) in doc
    assert scale_sentence(result) in doc
    assert cost_sentence(result) in doc
    assert result["command"].replace(".venv/bin/python", "OMP_NUM_THREADS=1 .venv/bin/python") in doc.replace(" \\\n    ", " ")


def test_the_benchmark_runs_at_a_tiny_budget_and_writes_real_numbers(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import online_rl_comparison
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = online_rl_comparison.main(["--quick", "--seeds", "0", "--envs", "Hopper-v5", "--work-dir",
                                        str(tmp_path / "runs"), "--json", str(tmp_path / "result.json"),
                                        "--plot", str(tmp_path / "result.png")])
    assert json.loads((tmp_path / "result.json").read_text()) == result
    assert (tmp_path / "result.png").stat().st_size > 0
    scale = result["scale"]
    assert [method["label"] for method in result["methods"]] == ["FPMD-M", "FPMD-R", "MFPO", "SAC"]
    for method in result["methods"]:
        task = method["tasks"]["Hopper-v5"]
        (run,) = task["runs"]
        assert run["updates"] == scale["online_steps"] - scale["learning_starts"]
        assert [point["env_steps"] for point in run["curve"]] == [12, 24]
        for name in ("updates_per_second", "updates_per_cpu_second", "act_ms_p50", "act_cpu_ms_p50"):
            assert math.isfinite(task[name]) and task[name] > 0, (method["name"], name)
        for point, run_point in zip(task["curve"], run["curve"]):  # one seed: mean = min = max = its return
            assert math.isfinite(point["mean"]) and point["mean"] == point["min"] == point["max"] == run_point["mean_return"]
        assert all(math.isfinite(value) for value in run["last_metrics"].values())
    assert table_lines(result)[2].startswith("| FPMD-M | Hopper-v5 | ")
    assert result["command"].endswith("--plot " + str(tmp_path / "result.png")) and "--work-dir" not in result["command"]


def test_the_doc_states_mfpos_settings_as_the_code_has_them():
    from mvp_ros.rl.mfpo import MfpoConfig

    settings = MfpoConfig()
    doc = DOC.read_text()
    mfpo_row = {line.split(" | ")[0]: line.split(" | ")[2] for line in doc.splitlines() if line.startswith("| ")
                and line.count(" | ") == 3}
    assert (f"{settings.proposal_samples} policy samples and {settings.clean_samples} clean-action samples per state"
            in mfpo_row["| policy step"])
    assert f"logit-normal(+{settings.time_logit_mean}, 1) times" in mfpo_row["| policy step"]
    assert f"{settings.equal_time_fraction:.0%} of pairs with r = t" in mfpo_row["| policy step"]
    assert f"best of {settings.eval_candidates} under the target critics" in mfpo_row["| acting"]
    assert (f"logits over {settings.value_atoms} values evenly spaced on [{settings.value_min:.0f}, "
            f"{settings.value_max:.0f}]" in mfpo_row["| networks"])
    assert (f"alpha from {settings.initial_alpha}, tuned to target entropy {settings.target_entropy_per_dim} \\|A\\|"
            in mfpo_row["| temperature"])
