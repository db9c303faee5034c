"""docs/benchmarks.md's RL part keeps the figures of benchmarks/results/bench_rl_cpu.json, formatted as
shown (the pattern of test_docs.py): the update table, the MVP-RL against QC sentence, the goals,
and the deployed select step's inference row."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
BENCH_RL = "benchmarks/results/bench_rl_cpu.json"
BENCH_RL_EAGER = "benchmarks/results/bench_rl_cpu_eager.json"
UPDATE_NAMES = {"bc": "BC (MVP loss)", "mvp-rl": "MVP-RL", "qc": "QC (flow head, 10 Euler steps)"}
FLOOR_GOAL, QC_GOAL = 1.3, 2.0


def update_rows(bench: dict) -> list[str]:
    return [f"| {UPDATE_NAMES[row['update']]} | {row['update_ms_p50']:.1f} | {row['updates_per_s']:.2f} | "
            f"{row['ratio_to_bc']:.2f} | {row['floor_ms_p50']:.1f} | {row['ratio_to_floor']:.2f} | "
            f"{row['flops'] / 1e9:.1f} |" for row in bench["rl_training"]]


def speedup(bench: dict) -> float:
    updates = {row["update"]: row for row in bench["rl_training"]}
    return updates["qc"]["update_ms_p50"] / updates["mvp-rl"]["update_ms_p50"]


def goal_lines(bench: dict) -> list[str]:
    mvp_rl = next(row for row in bench["rl_training"] if row["update"] == "mvp-rl")
    within = mvp_rl["ratio_to_floor"] <= FLOOR_GOAL
    faster = speedup(bench) >= QC_GOAL
    return [f"- MVP-RL update within {FLOOR_GOAL}x of its floor: {'met' if within else '**not met**'} "
            f"({mvp_rl['ratio_to_floor']:.2f}x).",
            f"- MVP-RL at least {QC_GOAL:g}x faster per update than QC: {'met' if faster else '**not met**'} "
            f"({speedup(bench):.2f}x)."]


def select_row(bench: dict) -> str:
    rows = {(row["head"], row["mode"]): row for row in bench["inference"] if row["obs"] == "lowdim"}
    select = [rows["mvp select best-of-16", mode] for mode in ("eager", "compile", "aot")]
    cells = " | ".join(f"{row['p50_ms']:.2f} ({row['ratio_to_mvp']:.2f}x)" for row in select)
    plain = " / ".join(f"{rows['mvp', mode]['p50_ms']:.2f}" for mode in ("eager", "compile", "aot"))
    return f"| {cells} | {plain} |"


def test_the_rl_update_figures_are_the_result_file() -> None:
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    bench = json.loads((ROOT / BENCH_RL).read_text())
    assert [row["update"] for row in bench["rl_training"]] == list(UPDATE_NAMES)
    assert all(row["batch_size"] == 256 and row["threads"] == 1 for row in bench["rl_training"])
    assert f"--json {BENCH_RL}" in doc
    for line in [*update_rows(bench), *goal_lines(bench), select_row(bench)]:
        assert line in doc, line
    assert f"MVP-RL runs {speedup(bench):.2f}x as many updates per second as QC" in doc
    assert f"load average {bench['machine']['load_average_1min']:.1f}" in doc


def test_the_eager_update_figures_are_their_result_file() -> None:
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    eager = json.loads((ROOT / BENCH_RL_EAGER).read_text())
    updates = {row["update"]: row for row in eager["rl_training"]}
    assert not any(row["compiled_bootstrap"] for row in updates.values()) and updates["mvp-rl"]["batch_size"] == 256
    assert (f"the MVP-RL update took {updates['mvp-rl']['ratio_to_floor']:.2f}x its floor and QC's "
            f"{updates['qc']['ratio_to_floor']:.2f}x\n(`{BENCH_RL_EAGER}`, load average "
            f"{eager['machine']['load_average_1min']:.1f})") in doc
