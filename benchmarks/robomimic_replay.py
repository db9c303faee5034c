"""Do observations mean what they meant in the data? For each task, `mvp demos` writes a file
(robosuite 1.5), test/helpers/robosuite14.py rewrites it as a Robomimic v1.4.1-style file (robosuite
1.4 env_args and `object` definitions), and every stored low-dim observation is compared with the
one evaluation computes from the stored state (mvp_ros.sim.state_replay): for our file, for the
v1.4.1-style file, and for that file read with robosuite 1.5's definitions (its env_version set
to the installed robosuite: what evaluation did before the data's version was honoured).

    MUJOCO_GL=egl .venv/bin/python benchmarks/robomimic_replay.py --episodes 5 \
        --json benchmarks/results/robomimic_replay.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import h5py  # noqa: E402
import robosuite  # noqa: E402

from mvp_ros.cli import main as mvp  # noqa: E402
from mvp_ros.sim.robosuite_versions import RobosuiteVersionWarning  # noqa: E402
from mvp_ros.sim.state_replay import observation_differences  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "test" / "helpers"))
from robosuite14 import write_robosuite_1_4_copy  # noqa: E402


def compare(task: str, episodes: int, seed: int, directory: Path) -> dict:
    ours, old, untranslated = (directory / f"{task}_{name}.hdf5" for name in ("ours", "v141", "v141_as_1_5"))
    if mvp(["demos", "--task", task, "--episodes", str(episodes), "--out", str(ours), "--seed", str(seed)]) != 0:
        raise SystemExit(f"mvp demos --task {task} failed")
    write_robosuite_1_4_copy(ours, old)
    write_robosuite_1_4_copy(ours, untranslated)
    with h5py.File(untranslated, "r+") as file:
        env_args = json.loads(file["data"].attrs["env_args"])
        file["data"].attrs["env_args"] = json.dumps({**env_args, "env_version": robosuite.__version__})
    files = {"ours": ours, "v141_style": old, "v141_style_read_as_1_5": untranslated}
    results = {name: observation_differences(path) for name, path in files.items()}
    return {name: {"env_version": result["env_version"], "demos": result["demos"], "steps": result["steps"],
                   "largest_difference": result["keys"]} for name, result in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lift,can,square", help="comma-separated mvp demos tasks (default lift,can,square)")
    parser.add_argument("--episodes", type=int, default=5, help="demos per task (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    warnings.simplefilter("ignore", RobosuiteVersionWarning)
    with tempfile.TemporaryDirectory() as directory:
        tasks = {task: compare(task, args.episodes, args.seed, Path(directory)) for task in args.tasks.split(",")}
    result = {"command": "MUJOCO_GL=egl .venv/bin/python benchmarks/robomimic_replay.py " + " ".join(sys.argv[1:]),
              "robosuite": robosuite.__version__, "episodes": args.episodes, "seed": args.seed, "tasks": tasks}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    for task, files in tasks.items():
        for name, values in files.items():
            print(task, name, {key: f"{value:.2g}" for key, value in values["largest_difference"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
