#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (a few minutes on one GPU), on a machine that has
# PyTorch with CUDA, numpy, safetensors, tqdm, pytest and matplotlib but no ROS 2 and nothing of
# this package installed:
#   1. the CUDA-graph tests (test/test_execution.py: a captured graph replays the eager chunks for new
#      observations, mvp, flow and DDIM) and the Policy API tests;
#   2. `mvp bench --device cuda --modes eager,cuda_graph`: every head eagerly and its one-step call
#      replayed as a CUDA graph, low-dim and two cameras, and the training step (bench_gpu.json/png);
#   3. the two-camera `mvp train` step at batch 64 and 256, fp32 against bf16 autocast, with and
#      without --prefetch and a compiled encoder (benchmarks/image_step_ablation.py --device cuda,
#      image_step_gpu_b64.json and image_step_gpu_b256.json) and the precision tests
#      (test/test_fast_training.py: auto is bf16 on CUDA); these also need h5py and PyYAML;
#   4. the same heads with torch.compile (bench_gpu_compile.json), last because compiling twelve
#      models takes longest: if time runs out, the figures of steps 2 and 3 are already written.
#   The ROS tick part of `mvp bench` needs the ROS 2 wheels and is left out.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      # default: $OUT, else gpu_check_results/
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
set -uo pipefail
results=$(realpath -m "${1:-${OUT:-gpu_check_results}}")
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
{
    "$python" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name())" || exit 1
    "$python" -m pytest -q -ra test/test_execution.py test/test_policy_api.py || status=1
    "$python" -m mvp_ros.cli bench --device cuda --modes eager,cuda_graph --ros-duration 0 --ros-image-duration 0 \
        --json "$results/bench_gpu.json" --plot "$results/bench_gpu.png" || status=1
    if "$python" -c "import h5py, yaml"; then
        "$python" -m pytest -q -ra test/test_fast_training.py -k "cuda or jvp" || status=1
        for batch in 64 256; do
            "$python" benchmarks/image_step_ablation.py --device cuda --batch-size $batch \
                --json "$results/image_step_gpu_b$batch.json" || status=1
        done
    else
        echo "image training step skipped: benchmarks/image_step_ablation.py needs h5py and PyYAML"; status=1
    fi
    "$python" -m mvp_ros.cli bench --device cuda --modes compile --train-repeats 0 --ros-duration 0 \
        --ros-image-duration 0 --json "$results/bench_gpu_compile.json" || status=1
    exit $status
} 2>&1 | tee "$results/gpu_check.log"
