"""Do a file's observations mean what evaluation computes? Replays the stored simulator states of a
Robomimic-format file in the environment its `env_args` build (as `mvp eval` builds it, with the
data's robosuite version) and compares every stored low-dim observation with the one computed
there: the largest absolute difference per key, over every step of the demos replayed.

    python -m mvp_ros.sim.state_replay data/lift.hdf5 [--demos 5] [--json differences.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from mvp_ros.data.robomimic import DatasetError, open_hdf5, read_env_args


def observation_differences(path: str | os.PathLike, demos: int | None = None) -> dict:
    """{"keys": {key: largest |stored - computed|}, "steps": steps compared, ...} over the first `demos` demos."""
    from mvp_ros.sim.envs import make_env

    env_args = read_env_args(path)
    if not env_args:
        raise DatasetError(f"{path}: no env_args (data.attrs['env_args']): there is no simulation to replay in")
    env = make_env(env_args)
    largest: dict[str, float] = {}
    steps = 0
    try:
        with open_hdf5(path) as file:
            names = sorted(file["data"], key=lambda name: int(name.rsplit("_", 1)[-1]))[:demos]
            for name in names:
                demo = file["data"][name]
                if "states" not in demo:
                    raise DatasetError(f"{path}: data/{name} has no states to replay")
                states = demo["states"][()]
                stored = {key: demo["obs"][key][()] for key in demo["obs"] if demo["obs"][key].dtype != np.uint8}
                model_xml = demo.attrs.get("model_file")
                env.reset_to(states[0], model_xml=model_xml.decode() if isinstance(model_xml, bytes) else model_xml)
                for step, state in enumerate(states):
                    computed = env.observe_state(state)
                    for key, values in stored.items():
                        if key not in computed:
                            raise DatasetError(f"{path}: data/{name}/obs/{key} is not an observation of "
                                               f"{env_args['env_name']} here (it has {', '.join(sorted(computed))})")
                        difference = float(np.max(np.abs(values[step] - computed[key])))
                        largest[key] = max(largest.get(key, 0.0), difference)
                steps += len(states)
    finally:
        env.close()
    return {"file": str(path), "env_name": env_args["env_name"], "env_version": env_args.get("env_version"),
            "demos": len(names), "steps": steps, "keys": dict(sorted(largest.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="Robomimic-format HDF5 file with states and env_args")
    parser.add_argument("--demos", type=int, help="replay only the first DEMOS demos (default: all)")
    parser.add_argument("--json", type=Path, help="write the differences to this JSON file")
    args = parser.parse_args(argv)
    result = observation_differences(args.dataset, args.demos)
    for key, difference in result["keys"].items():
        print(f"{key:28s} {difference:.3g}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
