"""`mvp bench` on tiny settings, so the benchmark cannot rot; its thresholds are benchmark results, not tests."""
import json

from mvp_ros.cli import main
from mvp_ros.policy.bench import INFERENCE_CASES, TRAINING_HEADS


def test_bench_writes_every_case_side_by_side(tmp_path):
    result_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["bench", "--repeats", "3", "--image-repeats", "2", "--train-repeats", "2", "--batch-size", "8",
                 "--width", "32", "--depth", "2", "--json", str(result_path), "--plot", str(plot_path)]) == 0
    result = json.loads(result_path.read_text())
    rows = result["inference"]
    assert {(row["head"], row["obs"]) for row in rows} == {(name, kind) for name in INFERENCE_CASES
                                                            for kind in ("lowdim", "image")}
    for row in rows:
        assert set(row) >= {"head", "steps", "obs", "mode", "device", "p50_ms", "p99_ms", "ratio_to_mvp"}
        assert 0 < row["p50_ms"] <= row["p99_ms"] and len(row["samples_ms"]) == (3 if row["obs"] == "lowdim" else 2)
        if row["head"] == "mvp":
            assert row["ratio_to_mvp"] == 1.0
    assert {row["head"]: row["steps"] for row in rows if row["obs"] == "lowdim"}["ddpm"] == 100
    assert [row["head"] for row in result["training"]] == list(TRAINING_HEADS)
    assert all(row["steps_per_s"] > 0 for row in result["training"])
    assert plot_path.stat().st_size > 1000
