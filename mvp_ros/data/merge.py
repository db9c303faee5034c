"""`mvp merge`: several Robomimic-format HDF5 files of one task into one file.

Demonstrations recorded in several sessions, or written by several `mvp demos` runs at once (one per
core, each with its own `--seed`), become one training set. The inputs must describe the same
simulation (`env_args`) and the same observation contract; every demo keeps its arrays and attrs
and gains `source_file` and `source_demo`, and the file keeps the attrs all inputs share. Masks: a
new seeded `train`/`valid` split over all demos, and each named mask the inputs carry (Robomimic's
operator masks such as `better`) with its demos renumbered; the inputs' train/valid splits and
percent subsets are not carried over.

    mvp merge data/can_a.hdf5 data/can_b.hdf5 --out data/can.hdf5
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mvp_ros.data.robomimic import (
    DatasetError,
    Episode,
    _data_group,
    _demo_sort_key,
    _env_args_of,
    _read,
    decode_attr,
    mask_demo_names,
    open_hdf5,
    write_robomimic,
)

SPLIT_MASK = re.compile(r"(\d+_percent)?(_?train|_?valid)?")


def _carried_masks(file) -> dict[str, list[str]]:
    """Named masks other than train/valid splits and percent subsets: {mask: [demo names]}."""
    masks = file.get("mask")
    carried = {}
    for name in (masks.keys() if masks is not None else ()):
        if SPLIT_MASK.fullmatch(name):
            continue
        carried[name] = mask_demo_names(masks, name)
    return carried


def _described(path: Path) -> tuple[dict | None, dict, list[str], dict[str, list[str]]]:
    """(env_args, file attrs, demo names, carried masks) of one input."""
    with open_hdf5(path) as file:
        data = _data_group(file, path)
        demos = sorted(data.keys(), key=_demo_sort_key)
        if not demos:
            raise DatasetError(f"{path}: no demos in data/")
        attrs = {key: decode_attr(value) for key, value in file.attrs.items()}
        return _env_args_of(data, path), attrs, demos, _carried_masks(file)


def _episodes(paths: Sequence[Path]) -> Iterator[Episode]:
    for path in paths:
        with open_hdf5(path) as file:
            for name in sorted(file["data"].keys(), key=_demo_sort_key):
                demo = file[f"data/{name}"]

                def group(key: str) -> dict[str, np.ndarray] | None:
                    return ({obs_key: _read(dataset, path) for obs_key, dataset in demo[key].items()}
                            if key in demo else None)

                optional = {key: _read(demo[key], path) for key in ("rewards", "dones", "states") if key in demo}
                if "actions" not in demo or "obs" not in demo:
                    raise DatasetError(f"{path}: data/{name} lacks actions or obs")
                attrs = {key: decode_attr(value) for key, value in demo.attrs.items() if key != "num_samples"}
                attrs.update(source_file=path.name, source_demo=name)
                yield Episode(obs=group("obs"), actions=_read(demo["actions"], path), next_obs=group("next_obs"),
                              attrs=attrs, **optional)


def merge(paths: Sequence[str | Path], out: str | Path, *, valid_fraction: float = 0.1, seed: int = 0) -> Path:
    """Write the demos of `paths`, in order, to `out` (see the module docstring)."""
    paths = [Path(path) for path in paths]
    if len(paths) < 2:
        raise ValueError(f"mvp merge needs at least two input files, got {len(paths)}")
    if Path(out).resolve() in {path.resolve() for path in paths}:
        raise ValueError(f"--out {out} is one of the inputs")
    described = [_described(path) for path in paths]
    env_args, first_attrs = described[0][0], described[0][1]
    for path, (other_env_args, other_attrs, _, _) in zip(paths[1:], described[1:]):
        if other_env_args != env_args:
            raise DatasetError(f"{path}: its env_args differ from {paths[0]}'s: the files describe different simulations")
        if other_attrs.get("contract") != first_attrs.get("contract"):
            raise DatasetError(f"{path}: its observation contract differs from {paths[0]}'s")
    named_masks: dict[str, list[int]] = {}
    offset = 0
    for (_, _, demos, masks) in described:
        index_of = {name: offset + index for index, name in enumerate(demos)}
        for mask, names in masks.items():
            named_masks.setdefault(mask, []).extend(index_of[name] for name in names if name in index_of)
        offset += len(demos)
    attrs = {key: value for key, value in first_attrs.items()
             if all(other_attrs.get(key) == value for _, other_attrs, _, _ in described[1:])}
    attrs.update(source="mvp merge", inputs=[str(path) for path in paths], seed=seed)
    return write_robomimic(out, _episodes(paths), env_args, valid_fraction=valid_fraction, seed=seed, attrs=attrs,
                           named_masks=named_masks)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, help="Robomimic-format HDF5 files of one task")
    parser.add_argument("--out", type=Path, required=True, help="the merged file to write")
    parser.add_argument("--valid-fraction", type=float, default=0.1,
                        help="share of the demos in the new mask/valid (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new train/valid split (default 0)")


def run(args: argparse.Namespace) -> int:
    out = merge(args.inputs, args.out, valid_fraction=args.valid_fraction, seed=args.seed)
    with open_hdf5(out) as file:
        print(f"mvp merge: {len(file['data'])} demos, {file['data'].attrs['total']} steps from "
              f"{len(args.inputs)} files -> {out}")
    return 0
