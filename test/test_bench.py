"""`mvp bench` on tiny settings, so the benchmark cannot rot; its thresholds are benchmark results, not tests."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvp_ros.cli import main
from mvp_ros.bench.policy_timing import INFERENCE_CASES, TRAINING_HEADS

TINY = ["--width", "32", "--depth", "2", "--batch-size", "8", "--train-repeats", "2", "--image-batch-sizes", "2,3",
        "--image-train-repeats", "2", "--train-threads", "1", "--rl-repeats", "2", "--rl-candidates", "4", "--rl-eager"]


def test_bench_writes_every_part_side_by_side(tmp_path):
    """Every head eagerly, the policy node's tick over DDS (another process), training; JSON and plot."""
    result_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["bench", *TINY, "--modes", "eager", "--repeats", "3", "--image-repeats", "2",
                 "--ros-duration", "2", "--ros-rate", "50", "--ros-image-duration", "1", "--ros-image-rate", "20",
                 "--ros-execution", "eager",
                 "--json", str(result_path), "--plot", str(plot_path)]) == 0
    result = json.loads(result_path.read_text())
    rows = result["inference"]
    assert {(row["head"], row["obs"], row["mode"]) for row in rows} == {
        (name, kind, "eager") for name in INFERENCE_CASES for kind in ("lowdim", "image")}
    for row in rows:
        assert set(row) >= {"head", "steps", "obs", "mode", "device", "p50_ms", "p99_ms", "ratio_to_mvp"}
        assert 0 < row["p50_ms"] <= row["p99_ms"] and len(row["samples_ms"]) == (3 if row["obs"] == "lowdim" else 2)
        if row["head"] == "mvp":
            assert row["ratio_to_mvp"] == 1.0
    assert {row["head"]: row["steps"] for row in rows if row["obs"] == "lowdim"}["ddpm"] == 100

    # rates well below the benchmark's, so a busy test machine still answers every tick in time
    for key, obs, rate, ticks in (("ros_tick", "lowdim", 50, 100), ("ros_tick_image", "image", 20, 20)):
        tick = result[key]
        assert set(tick) >= {"rate_hz", "p50_ms", "p99_ms", "missed_ticks"}
        assert (tick["obs"], tick["rate_hz"], tick["ticks"]) == (obs, rate, ticks)
        # every tick the node ran was answered with a policy command, none held; a loaded machine may
        # make the node's timer skip a tick, which the node counts as missed, but none may go unaccounted
        assert tick["node_ticks"] == tick["node_commands"] and tick["node_holds"] == 0
        assert tick["node_ticks"] + tick["node_missed_ticks"] == ticks
        assert tick["commands_received"] == tick["node_commands"] and 0 < tick["p50_ms"] <= tick["p99_ms"]
        # the node publishes, then DDS delivers here, then this process's executor runs the callback
        assert 0 < tick["command_published_p50_ms"] <= tick["p50_ms"] <= tick["callback_p50_ms"]
        assert tick["command_published_p99_ms"] <= tick["p99_ms"] <= tick["callback_p99_ms"]
        assert 0 <= tick["missed_ticks"] <= ticks and tick["node_exit_code"] == 0
        assert tick["thread_priority"] == 0 and tick["node_scheduling"] == "SCHED_OTHER"

    training = result["training"]
    assert [(row["obs"], row["batch_size"]) for row in training] == [
        (kind, size) for kind, size in (("lowdim", 8), ("image", 2), ("image", 3)) for _ in TRAINING_HEADS]
    assert [row["head"] for row in training] == list(TRAINING_HEADS) * 3
    assert all(row["steps_per_s"] > 0 and row["threads"] == 1 for row in training)
    assert [row["ratio_to_flow"] for row in training if row["head"] == "flow"] == [1.0] * 3
    assert plot_path.stat().st_size > 1000

    rl_rows = {row["update"]: row for row in result["rl_training"]}
    assert list(rl_rows) == ["bc", "mvp-rl", "qc"] and rl_rows["bc"]["ratio_to_bc"] == 1.0
    assert [rl_rows[name]["head"] for name in rl_rows] == ["mvp", "mvp", "flow"]
    for row in rl_rows.values():
        assert row["updates_per_s"] > 0 and row["floor_ms_p50"] > 0 and row["ratio_to_floor"] > 0
        assert row["batch_size"] == 8 and row["threads"] == 1 and not row["compiled_bootstrap"]
    # QC's bootstrap runs its actor 10 times, MVP-RL's once, and BC has no bootstrap
    assert rl_rows["qc"]["flops"] > rl_rows["mvp-rl"]["flops"] > rl_rows["bc"]["flops"] > 0
    assert rl_rows["qc"]["matmuls"] > rl_rows["mvp-rl"]["matmuls"] > rl_rows["bc"]["matmuls"]


def test_the_floor_replays_every_matrix_multiplication_of_an_update():
    """Forward and backward of a linear layer: x @ W^T + b, then the gradients of x and of W."""
    import torch

    from mvp_ros.bench.matmul_floor import MatmulFloor

    layer, inputs = torch.nn.Linear(3, 4), torch.randn(5, 3, requires_grad=True)
    floor = MatmulFloor(lambda: layer(inputs).sum().backward(), torch.device("cpu"))
    assert [func.__name__ for func, _ in floor.calls] == ["addmm.default", "mm.default", "mm.default"]
    assert floor.flops == 3 * 2 * 5 * 3 * 4
    floor.run()
    with pytest.raises(ValueError, match="the update ran no matrix multiplication"):
        MatmulFloor(lambda: inputs.sum(), torch.device("cpu"))


def test_bench_compiles_the_sampling_call_just_in_time_and_ahead_of_time(tmp_path):
    import torch

    result_path = tmp_path / "bench.json"
    limits = (torch._dynamo.config.recompile_limit, torch._dynamo.config.fail_on_recompile_limit_hit)
    assert main(["bench", *TINY, "--heads", "mvp,flow", "--modes", "eager,compile,aot", "--repeats", "3",
                 "--image-repeats", "0", "--train-repeats", "0", "--image-train-repeats", "0", "--ros-duration", "0",
                 "--ros-image-duration", "0", "--json", str(result_path)]) == 0
    result = json.loads(result_path.read_text())
    assert {(row["head"], row["mode"]) for row in result["inference"]} == {
        (head, mode) for head in ("mvp", "flow") for mode in ("eager", "compile", "aot")}
    assert result["ros_tick"] is None and result["training"] == []
    # torch.compile's limits are raised only while the bench's compiled cases run
    assert (torch._dynamo.config.recompile_limit, torch._dynamo.config.fail_on_recompile_limit_hit) == limits


def test_bench_without_ros_runs_inference_and_training(tmp_path):
    """The parts that need no ROS run where rclpy and the message packages are missing (a GPU machine, say)."""
    result_path = tmp_path / "bench.json"
    ros = ["rclpy", "builtin_interfaces", "diagnostic_msgs", "geometry_msgs", "rosgraph_msgs", "sensor_msgs",
           "std_msgs", "trajectory_msgs"]
    code = (f"import sys; sys.modules.update(dict.fromkeys({ros!r})); from mvp_ros.cli import main; "
            f"sys.exit(main(sys.argv[1:]))")  # a None entry makes its import fail
    subprocess.run([sys.executable, "-c", code, "bench", *TINY, "--heads", "mvp", "--modes", "eager", "--repeats", "3",
                    "--image-repeats", "0", "--ros-duration", "0", "--ros-image-duration", "0", "--json", str(result_path)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(result_path.read_text())
    assert [row["head"] for row in result["inference"]] == ["mvp"] and len(result["training"]) == 3 * len(TRAINING_HEADS)
    assert result["ros_tick"] is None


@pytest.mark.parametrize("arguments, message", [
    (["--modes", "cuda_graph"], "--modes cuda_graph needs --device cuda"),
    (["--modes", "jit"], "--modes takes auto or a comma-separated list"),
    (["--heads", "flow"], "--heads must include mvp"),
    (["--ros-execution", "jit"], "--ros-execution takes auto or one of eager, compile, aot, cuda_graph"),
    (["--ros-execution", "cuda_graph"], "--ros-execution cuda_graph needs --device cuda"),
    (["--ros-duration", "0.001"], "the lowdim ROS tick needs a rate > 0 and at least one tick"),
    (["--ros-image-rate", "0"], "the image ROS tick needs a rate > 0"),
    (["--ros-priority", "120"], "--ros-priority: thread_priority must be 0 (the normal scheduler) or a SCHED_FIFO priority"),
    (["--image-batch-sizes", "64,x"], "--image-batch-sizes takes comma-separated positive integers; got '64,x'"),
    (["--image-batch-sizes", "0"], "--image-batch-sizes takes comma-separated positive integers"),
    (["--train-threads", "-1"], "--train-threads must be >= 0 (0: as mvp train), got -1"),
    (["--rl-candidates", "0"], "--rl-candidates must be >= 1, got 0"),
])
def test_bench_refuses_bad_settings(arguments, message, capsys):
    assert main(["bench", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_wakeup_benchmark_times_every_workload_back_to_back_sleeping_and_busy_waiting(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "bench_wakeup.py"
    result_path = tmp_path / "wakeup.json"
    subprocess.run([sys.executable, str(script), "--period-ms", "2", "--blocks", "2", "--block", "5",
                    "--json", str(result_path)], check=True, capture_output=True, timeout=300)
    result = json.loads(result_path.read_text())
    assert result["period_ms"] == 2 and result["machine"]["device_name"] == "cpu"
    for work in ("python", "torch_op", "weights", "policy"):
        row = result[work]
        assert 0 < row["back_to_back_p50_ms"] <= row["back_to_back_p99_ms"]
        for pacing in ("paced", "busy_wait"):
            assert 0 < row[f"{pacing}_p50_ms"] <= row[f"{pacing}_p99_ms"]
            assert row[f"{pacing}_over_back_to_back_p50"] == round(row[f"{pacing}_p50_ms"] / row["back_to_back_p50_ms"], 2)
