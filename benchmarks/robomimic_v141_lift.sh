#!/usr/bin/env bash
# A policy trained on a Robomimic v1.4.1-style Lift file, evaluated as the data was made and with
# robosuite 1.5's observation definitions: 100 scripted demos (mvp demos, seed 0) rewritten by
# test/helpers/robosuite14.py (robosuite 1.4 env_args and `object`), MVP trained for 8000 steps,
# then 20 episodes of mvp eval each way; the second run's checkpoint is the same weights with its
# env_args' env_version set to the installed robosuite (controller settings still translated,
# observations as 1.5 defines them).
#
#     nice -n 10 bash benchmarks/robomimic_v141_lift.sh WORK_DIR
#
# writes benchmarks/results/robomimic_v141_lift_eval.json and robomimic_v141_lift_eval_as_1_5.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=egl OMP_NUM_THREADS=1
work=${1:?usage: robomimic_v141_lift.sh WORK_DIR}
mkdir -p "$work"
.venv/bin/mvp demos --task lift --episodes 100 --out "$work/lift100.hdf5" --seed 0
.venv/bin/python -c "
import sys; sys.path.insert(0, 'test/helpers')
from robosuite14 import write_robosuite_1_4_copy
write_robosuite_1_4_copy('$work/lift100.hdf5', '$work/lift100_v141.hdf5')"
.venv/bin/mvp train --dataset "$work/lift100_v141.hdf5" --out "$work/ckpt" --head mvp --steps 8000 --horizon 5 \
    --obs-keys robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object --seed 0 --no-progress
cp -r "$work/ckpt" "$work/ckpt_as_1_5"
.venv/bin/python -c "
import json, robosuite
path = '$work/ckpt_as_1_5/config.json'
config = json.load(open(path))
config['env_args']['env_version'] = robosuite.__version__
json.dump(config, open(path, 'w'), indent=2)"
.venv/bin/mvp eval --checkpoint "$work/ckpt" --episodes 20 --temporal-ensemble --device cpu --no-progress \
    --json benchmarks/results/robomimic_v141_lift_eval.json
.venv/bin/mvp eval --checkpoint "$work/ckpt_as_1_5" --episodes 20 --temporal-ensemble --device cpu --no-progress \
    --json benchmarks/results/robomimic_v141_lift_eval_as_1_5.json
