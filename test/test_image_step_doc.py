"""docs/benchmarks.md's table of what each change to the image training step bought is
benchmarks/results/image_step_ablation.json, row for row, formatted as shown."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
ABLATION = ROOT / "benchmarks" / "results" / "image_step_ablation.json"
IDLE_ABLATION = ROOT / "benchmarks" / "results" / "image_step_ablation_idle.json"  # an earlier run, machine idle
REFERENCE = "+ random 76x76 crops of the 84x84 images"  # the one-thread step the alternatives change


def ablation_rows(ablation: dict) -> list[str]:
    """| change | wall s | CPU s | x baseline | x the row it changes | per row; a failed row shows its error."""
    rows = ablation["rows"]
    reference = next(row for row in rows if row["change"] == REFERENCE)
    lines = []
    for index, row in enumerate(rows):
        if "error" in row:
            lines.append(f"| {row['change']} | failed: `{row['error']}` | | | |")
            continue
        if index == 0:
            relative = "-"
        elif "ratio_to_previous_row" in row:
            relative = f"{row['ratio_to_previous_row']:.2f}"
        else:
            relative = f"{row['s_per_step'] / reference['s_per_step']:.2f}"
        lines.append(f"| {row['change']} | {row['s_per_step']:.3f} | {row['cpu_s_per_step']:.3f} | "
                     f"{row['ratio_to_baseline']:.2f} | {relative} |")
    return lines


def context_sentence(ablation: dict) -> str:
    low, high = ablation["machine"]["load_average_1min"]
    error = ablation["bf16_jvp_relative_error"]
    return (f"batch {ablation['batch_size']}, {ablation['repeats']} timed steps per row, load average {low:.2f} at "
            f"the start and {high:.2f} at the end; gathering a batch took {ablation['data_s_per_batch'] * 1000:.1f} ms; "
            f"bf16 autocast moved the prediction u by {error['u']:.4f}, du/dt by {error['du_dt']:.4f} and the MVP "
            f"target by {error['target']:.6f} (relative L2 against fp32)")


def what_each_change_bought(ablation: dict, idle: dict) -> list[str]:
    """The figures of the doc's list below the table, as they appear there."""
    rows = {row["change"]: row for row in ablation["rows"]}
    reference = rows[REFERENCE]["cpu_s_per_step"]

    def cpu(change: str) -> str:
        return f"{rows['alternative: ' + change]['cpu_s_per_step']:.3f}"

    idle_rows = {row["change"]: row for row in idle["rows"]}
    low, high = idle["machine"]["load_average_1min"]
    target = ablation["mvp_target_torch_compile"]
    return [
        f"{idle['rows'][0]['s_per_step']:.3f} s to {idle_rows[REFERENCE]['s_per_step']:.3f} s on one thread",
        f"load average {low:.2f}-{high:.2f}), and\n  {idle_rows['+ 2 threads (one per core)']['s_per_step']:.3f} s on two",
        f"{rows['alternative: + bf16 autocast (--precision bf16)']['cpu_s_per_step'] / reference:.2f}x the CPU time",
        f"({cpu('+ 2 batches gathered ahead in a background thread (--prefetch 2)')} against {reference:.3f} CPU s",
        f"takes {ablation['data_s_per_batch'] * 1000:.1f} ms",
        f"of the observation encoder, {cpu('+ torch.compile of the observation encoder')} against {reference:.3f}",
        f"backbone, {cpu('+ torch.compile of the backbone (inside the JVP)')} (no gain)",
        f"whole loss: `{ablation['whole_loss_torch_compile']}`",
        f"took {target['compiled_ms']:.2f} ms against {target['eager_ms']:.2f} ms eagerly",
    ]


def test_the_benchmark_doc_image_step_table_is_the_ablation_file() -> None:
    ablation = json.loads(ABLATION.read_text())
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    for line in ablation_rows(ablation):
        assert line in doc, line
    assert context_sentence(ablation) in doc
    for figure in what_each_change_bought(ablation, json.loads(IDLE_ABLATION.read_text())):
        assert figure in doc, figure
    assert "Unsupported functorch tracing attempt" in ablation["backbone_torch_compile_inside_jvp"]
