"""docs/deployment.md's figures are its result files' values, formatted as shown (as test/test_docs.py
checks the README and the other docs): image conversion and trajectory continuity."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[1]


def result(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


def conversion_rows(results: dict) -> list[str]:
    rows = []
    for run in results["runs"]:
        bag = f"{run['bag_seconds']:g} s, {run['image_messages']} images"
        before = run["before"]
        rows.append(f"| {bag} | {run['stored_image']} | {run['seconds']:.1f} s | {run['image_messages_per_s']:.0f} | "
                    f"{run['peak_rss_mib']:.0f} MiB | {before['seconds']:.1f} s, {before['peak_rss_mib']:.0f} MiB |")
    return rows


def continuity_rows(results: dict) -> list[str]:
    names = {"point": "one point per tick", "chunk": "whole chunk"}
    return [f"| {names[mode['mode']]} | {mode['velocity_jump_rad_s_p50']:.3f} / {mode['velocity_jump_rad_s_p99']:.3f} / "
            f"{mode['velocity_jump_rad_s_max']:.3f} rad/s | {mode['acceleration_rad_s2_p99']:.0f} rad/s² | "
            f"{100 * mode['stopped_share_while_target_moves']:.1f}% | {mode['rms_error_to_target_rad']:.3f} rad |"
            for mode in results["modes"]]


def jitter_sentence(results: dict) -> str:
    point = results["modes"][0]
    return (f"command intervals p50 {point['command_interval_ms_p50']:.0f} ms, p99 {point['command_interval_ms_p99']:.0f}"
            f" ms, max {point['command_interval_ms_max']:.0f} ms")


def test_the_deployment_guide_figures_are_the_result_files() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    conversion = result("benchmarks/results/image_conversion.json")
    for row in conversion_rows(conversion):
        assert row in doc, row
    assert all(run["same_obs_and_actions_as_before"] for run in conversion["runs"])
    assert f"as at {conversion['runs'][0]['before']['revision']}, before conversion streamed" in " ".join(doc.split())
    continuity = result("benchmarks/results/trajectory_continuity.json")
    for row in continuity_rows(continuity):
        assert row in doc, row
    assert jitter_sentence(continuity) in doc
