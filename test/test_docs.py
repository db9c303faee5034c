"""The docs name tests as evidence for what they claim: every test they name exists. Every figure
the README and docs/ keep from a committed result file is that file's value, formatted as shown,
and every relative link in them points to a file of the repository."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "test").glob("test_*.py"):
        names.update(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.MULTILINE))
    return names


def read(relative: str) -> str:
    return (ROOT / relative).read_text()


def result(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return centre - half, centre + half


# The tables and sentences below are what the docs show; the docs were written from them.

def demo_lines(demo: dict) -> list[str]:
    low, high = demo["success_rate_ci95"]
    return [
        f"success rate {demo['success_rate']:.3f} ({demo['successes']}/{demo['episodes']}, "
        f"95% interval {low:.3f}-{high:.3f}) over ROS 2 topics, seeds {demo['seeds'][0]}-{demo['seeds'][-1]}",
        f"tick latency (observation ready -> command published): p50 {demo['tick_latency_ms_p50']:.3f} ms, "
        f"p99 {demo['tick_latency_ms_p99']:.3f} ms; inference p50 {demo['inference_ms_p50']:.3f} ms; "
        f"{demo['ticks']} ticks, {demo['missed_ticks']} missed, {demo['stale_ticks']} stale, "
        f"{demo['held_steps']} simulation steps without a command; {demo['seconds']:.1f} s",
    ]


def ros_demo_cells(demo: dict) -> str:
    """A row's figures in a camera policy's README table of `mvp demo` runs."""
    low, high = demo["success_rate_ci95"]
    return (f"| {demo['success_rate']:.2f} ({demo['successes']}/{demo['episodes']}, {low:.2f}-{high:.2f}) | "
            f"{demo['tick_latency_ms_p50']:.1f} / {demo['tick_latency_ms_p99']:.1f} ms | "
            f"{demo['missed_ticks']} of {demo['ticks']} |")


def eval_cells(evaluation: dict) -> str:
    low, high = evaluation["success_rate_ci95"]
    return (f"| {evaluation['success_rate']:.2f} ({low:.2f}-{high:.2f}) | "
            f"{evaluation['inference_ms_p50']:.2f} / {evaluation['inference_ms_p99']:.2f} ms |")


def heads_rows(compare: dict) -> list[str]:
    rows = []
    for row in compare["rows"]:
        low, high = wilson_interval(row["successes"], row["episodes"])
        rows.append(f"| {row['variant']} | {row['success_rate']:.2f} ({low:.2f}-{high:.2f}) | "
                    f"{row['inference_ms_p50']:.2f} ms | {row['inference_ratio_to_mvp']:.1f} |")
    return rows


def inference_rows(bench: dict) -> list[str]:
    cases = {(row["head"], row["obs"], row["mode"]): row for row in bench["inference"]}
    rows = []
    for head in dict.fromkeys(row["head"] for row in bench["inference"]):
        eager, compiled = cases[head, "lowdim", "eager"], cases[head, "lowdim", "compile"]
        aot = cases.get((head, "lowdim", "aot"))
        images = " / ".join(f"{cases[head, 'image', mode]['p50_ms']:.1f}" if (head, "image", mode) in cases else "-"
                            for mode in ("eager", "compile", "aot"))
        aot_cells = f"{aot['p50_ms']:.2f} | {aot['ratio_to_mvp']:.2f}" if aot else "- | -"
        rows.append(f"| {head} | {eager['steps']} | {eager['p50_ms']:.2f} / {eager['p99_ms']:.2f} | "
                    f"{eager['ratio_to_mvp']:.2f} | {compiled['p50_ms']:.2f} | {compiled['ratio_to_mvp']:.2f} | "
                    f"{aot_cells} | {images} |")
    return rows


def tick_row(name: str, tick: dict) -> str:
    return (f"| {name} | {tick['p50_ms']:.2f} / {tick['p99_ms']:.2f} ms | "
            f"{tick['node_tick_p50_ms']:.2f} / {tick['node_tick_p99_ms']:.2f} ms | "
            f"{tick['missed_ticks']} of {tick['ticks']} |")


def training_sentence(bench: dict) -> str:
    steps = {row["head"]: row for row in bench["training"]}
    return (f"an MVP step takes {steps['mvp']['step_ms_p50']:.1f} ms, {steps['mvp']['ratio_to_flow']:.2f}x a "
            f"flow-matching step of the same network ({steps['flow']['step_ms_p50']:.1f} ms); diffusion "
            f"{steps['diffusion']['step_ms_p50']:.1f} ms, MLP {steps['mlp']['step_ms_p50']:.1f} ms")


def ivc_rows(summary: dict, power: str) -> list[str]:
    return [f"| {power} | {weight} | {values['near_mode']['mean']:.3f} | {values['between_modes']['mean']:.3f} | "
            f"{values['balance']['mean']:.3f} | {values['boundary_error']['mean']:.3f} |"
            for weight, values in summary.items()]


def conversion_sentence(mcap: dict, sqlite: dict) -> str:
    return (f"{mcap['joint_state_messages_per_s'] / 1000:.0f}k JointState messages/s from MCAP "
            f"(load average {mcap['load_average_1min']:.1f}) and {sqlite['joint_state_messages_per_s'] / 1000:.0f}k/s "
            f"from sqlite3 (load average {sqlite['load_average_1min']:.1f})")


# Tests.

def test_every_test_the_safety_doc_names_exists() -> None:
    named = set(re.findall(r"`(test_\w+)`", read("docs/safety.md")))
    assert len(named) >= 15
    assert named - defined_tests() == set()


def test_every_test_the_docs_name_exists() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named = set(re.findall(r"`(test_\w+)`", path.read_text()))
        assert named - defined_tests() == set(), path.name


def test_the_readme_points_to_the_safety_doc() -> None:
    assert "[docs/safety.md](docs/safety.md)" in read("README.md")


def test_the_readme_flood_figures_are_the_result_files() -> None:
    """The flood figures moved with the benchmarks to docs/benchmarks.md."""
    doc = read("docs/benchmarks.md")
    flood = result("benchmarks/results/flood.json")["phases"]["flood"]
    assert f"published {flood['commands_per_s']} commands/s" in doc
    assert f"{flood['longest_gap_ms']} ms (`.venv/bin/python benchmarks/bench_flood.py" in doc
    previous = [run["phases"]["flood"] for run in result("benchmarks/results/flood_previous_node.json")["runs"]]
    rates = sorted(phase["commands_per_s"] for phase in previous)
    assert f"published {rates[0]}-{rates[-1]} commands/s" in doc
    assert f"gaps up to {max(phase['longest_gap_ms'] for phase in previous)} ms" in doc


def test_every_relative_link_in_the_readme_and_docs_points_to_a_file() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(documents) >= 6
    for document in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (document.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{document.name} links {target}, which does not exist"
            assert ROOT.resolve() in path.parents or path == ROOT.resolve(), f"{document.name} links outside: {target}"


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (outside code blocks): lower case, punctuation
    other than hyphens dropped, spaces as hyphens."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)}


def test_heading_anchors_are_githubs() -> None:
    assert heading_anchors("# The `mvp` command\n```\n# a comment\n```\n## RL on data: BC, MVP-RL and QC's\n") == {
        "the-mvp-command", "rl-on-data-bc-mvp-rl-and-qcs"}


def test_every_link_into_a_section_names_a_heading_of_its_file() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "models").glob("*/README.md"))]
    linked = 0
    for document in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if re.match(r"[a-z]+:", target) or "#" not in target:
                continue
            file, anchor = target.split("#", 1)
            path = document.parent / file if file else document
            assert anchor in heading_anchors(path.read_text()), f"{document.relative_to(ROOT)} links {target}: no such heading"
            linked += 1
    assert linked >= 10


def test_the_readme_ros_install_pins_what_rosdep_does_not_install() -> None:
    """The pip line of the ROS 2 install: what package.xml leaves to pip (gymnasium with imageio, which its
    MuJoCo tasks load), at the Makefile's torch and requirements.txt's pins."""
    pins = dict(line.split("==") for line in read("requirements.txt").splitlines() if "==" in line and not line.startswith("#"))
    line = next(line for line in read("README.md").splitlines() if line.startswith("pip install "))
    listed = dict(requirement.split("==") for requirement in line.split()[2:])
    assert listed.pop("torch") == re.search(r"^TORCH_SPEC \?= torch==(\S+)$", read("Makefile"), flags=re.MULTILINE)[1]
    assert {"safetensors", "rosbags", "mujoco", "robosuite", "gymnasium", "imageio"} <= set(listed)
    assert listed == {name: pins[name] for name in listed}


def test_nothing_refers_outside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for outside in ("../" + "shared", "design" + ".md", "/tmp/"):
            assert outside not in text, f"{path.name} refers to {outside}"


README_DEMOS = ("models/lift_image/demo_ros_image.json",)
MODEL_DEMOS = {"models/lift_lowdim/README.md": "benchmarks/results/demo_lift_lowdim.json"}
CAMERA_POLICY_DEMOS = {("lift_image", "sensor_msgs/msg/Image"): "demo_ros_image.json",
                       ("lift_image", "sensor_msgs/msg/CompressedImage (png)"): "demo_ros_compressed.json",
                       ("lift_image", "sensor_msgs/msg/CompressedImage (jpeg)"): "demo_ros_compressed_jpeg.json",
                       ("can_image", "sensor_msgs/msg/Image"): "demo_ros_image.json"}
# The README's table of shipped policies: each evaluation's row, by the cell naming how it ran.
SHIPPED_EVALUATIONS = {
    "models/lift_image/eval_50.json": ("`--seed 1000000 --temporal-ensemble` ", range(1_000_000, 1_000_050)),
    "models/lift_lowdim/eval_50_temporal_ensemble.json": ("`--temporal-ensemble` ", range(50)),
    "models/lift_lowdim/eval_50_open_loop.json": ("whole chunk open loop ", range(50)),
    "models/can_image/eval_50.json": ("`--seed 1000000 --temporal-ensemble` ", range(1_000_000, 1_000_050)),
    "models/can_lowdim/eval_50.json": ("`--seed 1000000 --temporal-ensemble` ", range(1_000_000, 1_000_050)),
    "models/square_lowdim/eval_50.json": ("`--seed 1000000 --temporal-ensemble` ", range(1_000_000, 1_000_050)),
}


def test_the_demo_blocks_are_the_committed_demo_runs() -> None:
    """`make demo` (the camera policy) in the README, `make demo-lowdim` in its model's README: each
    block printed as its run printed it."""
    blocks = {name: "README.md" for name in README_DEMOS} | {name: readme for readme, name in MODEL_DEMOS.items()}
    for name, document in blocks.items():
        demo = result(name)
        text = read(document)
        assert demo["node_exit_codes"] == {"sim": 0, "policy": 0} and demo["episodes"] == 10
        for line in demo_lines(demo):
            assert line in text, name
        assert f"--json {name}" in text
    assert "--checkpoint models/lift_image --temporal-ensemble --episodes 10 --json demo_results.json" in read("Makefile")
    assert "--checkpoint models/lift_lowdim --temporal-ensemble --episodes 10 --json demo_results.json" in read("Makefile")


def test_the_camera_policy_ros_table_is_its_demo_runs() -> None:
    """models/lift_image/README.md and can_image's: one row per way the cameras travel, each its run's figures."""
    for (model, messages), name in CAMERA_POLICY_DEMOS.items():
        demo = result(f"models/{model}/{name}")
        assert demo["checkpoint"] == f"models/{model}" and demo["node_exit_codes"] == {"sim": 0, "policy": 0}
        assert set(demo["camera_messages"].values()) == {messages}
        assert f"`{name}` " + ros_demo_cells(demo) in read(f"models/{model}/README.md"), (model, name)


def test_the_shipped_policies_table_is_their_committed_evaluations() -> None:
    """The README's row of each evaluation, and the same figures in its model's own README."""
    readme = read("README.md")
    for name, (how, seeds) in SHIPPED_EVALUATIONS.items():
        evaluation = result(name)
        assert evaluation["episodes"] == 50 and evaluation["seeds"] == list(seeds), name
        assert how + eval_cells(evaluation) in readme, name
        low, high = wilson_interval(evaluation["successes"], evaluation["episodes"])
        assert math.isclose(low, evaluation["success_rate_ci95"][0]) and math.isclose(high, evaluation["success_rate_ci95"][1])


TASK_NAMES = {"Lift": "Lift", "PickPlaceCan": "Can", "NutAssemblySquare": "Square"}


def test_the_readme_describes_the_shipped_checkpoints_as_they_are() -> None:
    """Head, backbone, chunk length and demonstrations per task, from each checkpoint's config.json."""
    demos = {}
    for config_path in sorted((ROOT / "models").glob("*/config.json")):
        config = json.loads(config_path.read_text())
        policy, training = config["policy"], config["training"]
        assert (policy["head"], policy["depth"], policy["hidden_dim"], policy["horizon"]) == ("mvp", 4, 512, 5), config_path
        demos.setdefault(TASK_NAMES[config["env_args"]["env_name"]], set()).add(
            training["dataset_demos"] + training["valid_demos"])
    listed = ", ".join(f"{task} {' and '.join(str(count) for count in sorted(demos[task]))}"
                       for task in TASK_NAMES.values() if task in demos)
    readme = " ".join(read("README.md").split())
    assert "All use the MVP head, a 4x512 backbone and chunks of 5 actions" in readme
    assert f"(`mvp demos`; {listed}" in readme, listed


def test_every_shipped_policy_has_its_evaluations_in_its_readme() -> None:
    models = sorted(path.parent for path in (ROOT / "models").glob("*/model.safetensors"))
    assert models
    for model in models:
        readme = (model / "README.md").read_text()
        evaluations = sorted(model.glob("eval_50*.json"))
        assert evaluations, f"{model.name} has no 50-episode evaluation"
        for path in evaluations:
            assert eval_cells(json.loads(path.read_text())) in readme, path.relative_to(ROOT)


def test_the_readme_figures_all_come_from_a_result_file() -> None:
    """The README keeps no measurement of its own: the demo block and the shipped policies' table are all."""
    readme = read("README.md")
    allowed = {line for name in README_DEMOS for line in demo_lines(result(name))}
    allowed |= {eval_cells(result(name)) for name in SHIPPED_EVALUATIONS}
    for line in readme.splitlines():
        if re.search(r"\d ms\b|commands/s|\bx MVP\b|messages/s", line):
            assert any(part in line for part in allowed), f"README figure without a result file: {line}"


def test_the_benchmark_doc_figures_are_the_result_files() -> None:
    doc = read("docs/benchmarks.md")
    for row in heads_rows(result("benchmarks/results/compare_heads.json")):
        assert row in doc
    bench = result("benchmarks/results/bench_cpu.json")
    for row in inference_rows(bench):
        assert row in doc
    assert tick_row("low-dim, 100 Hz", bench["ros_tick"]) in doc
    assert tick_row("two 84x84 cameras, 30 Hz", bench["ros_tick_image"]) in doc
    assert training_sentence(bench) in doc
    assert f"takes {bench['ros_tick']['node_inference_p50_ms']:.2f} ms at p50 (`node_inference_p50_ms`" in doc
    busy = result("benchmarks/results/bench_cpu_busy_day.json")
    assert (f"in the node at 100 Hz with aot p99 {busy['ros_tick']['node_tick_p99_ms']:.2f} ms and "
            f"{busy['ros_tick']['missed_ticks']} of {busy['ros_tick']['ticks']} ticks missed") in doc
    assert conversion_sentence(result("benchmarks/results/bag_conversion_mcap.json"),
                               result("benchmarks/results/bag_conversion_sqlite3.json")) in doc
    runs = result("benchmarks/results/thread_priority_ab.json")["runs"]
    fifo = [run for run in runs if run["thread_priority"]]
    normal = [run for run in runs if not run["thread_priority"]]
    def listed(runs: list[dict], key: str, form: str) -> str:
        return ", ".join(format(run[key], form) for run in runs)

    assert (f"node p99 {listed(fifo, 'node_tick_p99_ms', '.1f')} ms against {listed(normal, 'node_tick_p99_ms', '.1f')}"
            f" ms, missed ticks {listed(fifo, 'missed_ticks', 'd')} against {listed(normal, 'missed_ticks', 'd')}") in doc
    wakeup = result("benchmarks/results/wakeup_cpu.json")
    for part in ("torch_op", "weights", "policy"):
        figures = wakeup[part]
        assert (f"{figures['back_to_back_p50_ms']:.{3 if part == 'torch_op' else 2}f} | "
                f"{figures['paced_p50_ms']:.2f} | {figures['busy_wait_p50_ms']:.2f} |") in doc, part


def test_the_method_doc_ablation_is_the_result_files() -> None:
    doc = read("docs/method.md")
    for name, power in (("ivc_ablation", "0.5"), ("ivc_ablation_p0", "0")):
        summary = result(f"benchmarks/results/{name}.json")["summary"]
        for row in ivc_rows(summary, power):
            assert row in doc, row


def test_the_readme_rl_comparison_is_its_result_file() -> None:
    comparison = result("benchmarks/results/rl_comparison.json")
    scale = comparison["scale"]
    last = scale["online_stages"][-1]
    readme = read("README.md")
    assert (f"({scale['demos']} Lift episodes of three operators, {scale['depth']}x{scale['hidden_dim']} networks, "
            f"N = {scale['candidates']}, {scale['offline_steps']:,} offline updates, {scale['eval_episodes']} episodes "
            "per point)") in " ".join(readme.split())
    assert set(comparison["dataset_summary"]["operators"]) == {"better", "okay", "worse"}
    assert f"after {last:,} online env steps |" in readme
    for method in comparison["methods"]:
        points = {point["env_steps"]: point for point in method["points"]}
        name = method["label"] + (f", best-of-{method['best_of']}" if method["best_of"] > 1 else "")
        online = f"{points[last]['success_rate']:.2f}" if last in points else "-"
        assert f"| {name} | {points[0]['success_rate']:.2f} | {online} |" in readme, name
