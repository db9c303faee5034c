"""docs/benchmarks.md's comparison of BC, MVP-RL and Q-chunking on mixed-quality data keeps the figures
of benchmarks/results/rl_comparison.json, formatted as shown (the pattern of test_docs.py): the command,
the scale, the table, the online episodes and the update-rate sentence."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULT = "benchmarks/results/rl_comparison.json"


def method_name(method: dict) -> str:
    return method["label"] + (f", best-of-{method['best_of']}" if method["best_of"] > 1 else "")


def table_lines(result: dict) -> list[str]:
    stages = [0, *result["scale"]["online_stages"]]
    header = ("| method | " + " | ".join(f"{steps:,} env steps" for steps in stages)
              + " | updates/s offline | env steps/s online | inference ms per chunk (p50) |")
    lines = [header, "|---" * (len(stages) + 4) + "|"]
    for method in result["methods"]:
        points = {point["env_steps"]: point for point in method["points"]}
        cells = [f"{points[steps]['success_rate']:.2f} ({points[steps]['successes']}/{points[steps]['episodes']})"
                 if steps in points else "-" for steps in stages]
        online = method["online_env_steps_per_s"]
        lines.append(f"| {method_name(method)} | {' | '.join(cells)} | {method['offline_updates_per_s']:.1f} | "
                     f"{'-' if online is None else f'{online:.1f}'} | {method['inference_ms_p50']:.2f} |")
    return lines


def scale_sentence(result: dict) -> str:
    scale, seeds = result["scale"], result["seeds"]["evaluation"]
    stages = ", ".join(f"{steps:,}" for steps in scale["online_stages"])
    return (f"{scale['demos']} episodes; policy and critics {scale['depth']}x{scale['hidden_dim']}, batch "
            f"{scale['batch_size']}, N = {scale['candidates']}, {scale['offline_steps']:,} offline updates, then "
            f"{stages} online environment steps (one update each); {scale['eval_episodes']} evaluation episodes "
            f"per point, seeds {seeds[0]}-{seeds[-1]}")


def update_ratio(result: dict) -> float:
    rates = {method["method"]: method["offline_updates_per_s"] for method in result["methods"]}
    return rates["mvp-rl"] / rates["qc"]


def dataset_sentence(result: dict) -> str:
    summary = result["dataset_summary"]
    operators = summary["operators"]
    successes = sum(operator["successes"] for operator in operators.values())
    each = ", ".join(f"`{name}` {operator['successes']}/{operator['episodes']} in {operator['mean_steps']:.0f} steps"
                     for name, operator in operators.items())
    return (f"{summary['episodes']} episodes, {successes} of them with the success reward, by operator (successes/episodes, "
            f"mean length): {each}")


def online_sentence(result: dict) -> str:
    last = {method["method"]: method["points"][-1] for method in result["methods"]}
    return (f"in its {last['mvp-rl']['env_steps']:,} online environment steps MVP-RL finished "
            f"{last['mvp-rl']['online_episodes']} episodes ({last['mvp-rl']['online_success_rate']:.2f} of them "
            f"successful), QC {last['qc']['online_episodes']} ({last['qc']['online_success_rate']:.2f})")


def success(point: dict) -> str:
    low, high = point["success_rate_ci95"]
    return f"{point['success_rate']:.2f} ({low:.2f}-{high:.2f})"


def result_phrases(result: dict) -> list[str]:
    points = {method["method"]: method["points"] for method in result["methods"]}
    return [f"{success(points['bc'][0])} for BC (MVP head) and {success(points['mvp-rl'][0])} for MVP-RL with "
            f"best-of-{result['scale']['candidates']}",
            f"({success(points['qc'][0])}), and BC with the flow head is at {success(points['bc-flow'][0])}",
            f"reaches {success(points['mvp-rl'][-1])} and QC {success(points['qc'][-1])} after "
            f"{points['qc'][-1]['env_steps']:,} environment steps"]


def test_the_rl_comparison_verdict_holds_for_the_result_file() -> None:
    """The section's reading of the intervals: offline MVP-RL within BC's interval; after the online
    phase MVP-RL above BC of its head beyond the intervals and QC above BC of its head within them;
    QC above MVP-RL at every point, with overlapping intervals."""
    result = json.loads((ROOT / RESULT).read_text())
    points = {method["method"]: method["points"] for method in result["methods"]}
    assert points["mvp-rl"][0]["success_rate_ci95"][0] <= points["bc"][0]["success_rate_ci95"][1]
    assert points["mvp-rl"][-1]["success_rate_ci95"][0] > points["bc"][0]["success_rate_ci95"][1]
    assert points["qc"][-1]["success_rate_ci95"][0] <= points["bc-flow"][0]["success_rate_ci95"][1]
    assert points["qc"][-1]["success_rate"] > points["bc-flow"][0]["success_rate"]
    for qc, mvp_rl in zip(points["qc"], points["mvp-rl"]):
        assert qc["success_rate"] > mvp_rl["success_rate"]
        assert qc["success_rate_ci95"][0] <= mvp_rl["success_rate_ci95"][1]


def test_the_rl_comparison_figures_are_the_result_file() -> None:
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    result = json.loads((ROOT / RESULT).read_text())
    assert result["scale_name"] == "small"
    assert [method["method"] for method in result["methods"]] == ["bc", "bc-flow", "mvp-rl", "qc"]
    flat = doc.replace("\n", " ")
    assert result["command"] in doc.replace(" \\\n    ", " ")
    assert result["dataset_command"] in doc
    for line in table_lines(result):
        assert line in doc, line
    low, high = result["machine"]["load_average_1min_range"]
    phrases = [scale_sentence(result), dataset_sentence(result), online_sentence(result), *result_phrases(result),
               f"on the file's `train` mask ({result['dataset_summary']['train_mask_episodes']} episodes)",
               f"MVP-RL ran {update_ratio(result):.2f}x as many updates per second as QC",
               f"load average {low:.1f}-{high:.1f} during the runs"]
    for phrase in phrases:
        assert phrase in flat, phrase
    assert "(../benchmarks/results/rl_comparison.png)" in doc
