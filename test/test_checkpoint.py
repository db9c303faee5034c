"""Checkpoints: round trip for every head (low-dim, and an image key with two stacked frames), the
config.json contents, specific errors for every kind of bad checkpoint, and no pickle anywhere."""
from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import mvp_ros
from mvp_ros.policy import CheckpointError, Policy, PolicyConfig, load_checkpoint, save_checkpoint
from mvp_ros.policy.checkpoint import read_checkpoint_info
from mvp_ros.policy.model import ChunkPolicyModel
from mvp_ros.policy.normalizer import Normalization

LOWDIM = {"joints": (3,)}
WITH_IMAGE = {"joints": (3,), "camera": (12, 12, 3)}
HEADS = [("mvp", {}), ("flow", {}), ("diffusion", {"diffusion_sampler": "ddpm"}),
         ("diffusion", {"diffusion_sampler": "ddim"}), ("mlp", {})]
HEAD_IDS = ["mvp", "flow", "diffusion-ddpm", "diffusion-ddim", "mlp"]


def make_model(head: str, obs_shapes: dict, frame_stack: int = 1, seed: int = 0,
               **overrides) -> tuple[ChunkPolicyModel, Normalization]:
    """A small untrained model; actions in units far from [-1, 1] so unnormalization shows."""
    settings = dict(head=head, action_dim=2, horizon=4, obs_shapes=obs_shapes, frame_stack=frame_stack,
                    hidden_dim=32, depth=2, image_feature_dim=16, diffusion_train_steps=20)
    settings.update(overrides)
    config = PolicyConfig(**settings)
    lowdim = config.lowdim_keys
    normalization = Normalization(action_min=[100.0, -50.0], action_max=[120.0, -40.0],
                                  obs_mean={key: [0.5] * obs_shapes[key][0] for key in lowdim},
                                  obs_std={key: [2.0] * obs_shapes[key][0] for key in lowdim})
    torch.manual_seed(seed)
    return ChunkPolicyModel(config, normalization), normalization


def observation(shapes: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {key: rng.integers(0, 256, shape, dtype=np.uint8) if len(shape) == 3 else rng.normal(size=shape)
            for key, shape in shapes.items()}


def rollout(policy: Policy, shapes: dict, seed: int) -> np.ndarray:
    """Actions for three consecutive observations after reset(seed), then 3 candidates for a fourth."""
    policy.reset(seed)
    chunks = [policy.act(observation(shapes, step)) for step in range(3)]
    return np.concatenate([np.stack(chunks), policy.sample(observation(shapes, 3), 3)])


@pytest.mark.parametrize("obs_shapes, frame_stack", [(LOWDIM, 1), (WITH_IMAGE, 2)], ids=["lowdim", "image-2frames"])
@pytest.mark.parametrize("head, overrides", HEADS, ids=HEAD_IDS)
def test_round_trip_gives_identical_weights_and_actions(tmp_path, head, overrides, obs_shapes, frame_stack):
    model, normalization = make_model(head, obs_shapes, frame_stack, **overrides)
    directory = save_checkpoint(tmp_path / "checkpoint", model, normalization, training={"steps": 0})

    torch.manual_seed(123)  # a fresh initialization would now differ from the saved weights
    loaded, info = load_checkpoint(directory)
    assert info.config == model.config
    assert info.normalization == normalization
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(saved_state) == list(loaded_state)
    for name, tensor in saved_state.items():
        assert torch.equal(tensor, loaded_state[name]), name
    fresh, _ = make_model(head, obs_shapes, frame_stack, seed=123, **overrides)
    assert not torch.equal(fresh.state_dict()["backbone.net.0.weight"], saved_state["backbone.net.0.weight"])

    original = rollout(Policy(model, device="cpu"), obs_shapes, seed=5)
    policy = Policy.load(directory, device="cpu")
    np.testing.assert_array_equal(rollout(policy, obs_shapes, seed=5), original)
    np.testing.assert_array_equal(rollout(policy, obs_shapes, seed=5), original)  # reset(seed) restarts the noise
    if head == "mlp":
        np.testing.assert_array_equal(rollout(policy, obs_shapes, seed=6), original)
    else:
        assert not np.array_equal(rollout(policy, obs_shapes, seed=6), original)


def test_config_json_holds_config_normalization_versions_and_weights_hash(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE, frame_stack=2)
    contract = {"observations": {"joints": {"topic": "/joint_states"}}}
    directory = save_checkpoint(tmp_path / "checkpoint", model, normalization, env_args={"env_name": "Lift"},
                                contract=contract, training={"steps": 7})
    document = json.loads((directory / "config.json").read_text())
    assert document["format"] == "mvp_ros.policy" and document["format_version"] == 1
    assert document["normalization"] == {"action_min": [100.0, -50.0], "action_max": [120.0, -40.0],
                                         "obs_mean": {"joints": [0.5] * 3}, "obs_std": {"joints": [2.0] * 3}}
    assert PolicyConfig.from_dict(document["policy"]) == model.config
    assert document["policy"]["obs_shapes"] == {"joints": [3], "camera": [12, 12, 3]}
    assert document["policy"]["horizon"] == 4 and document["policy"]["frame_stack"] == 2
    assert document["env_args"] == {"env_name": "Lift"} and document["contract"] == contract
    assert document["training"] == {"steps": 7}
    assert document["versions"]["mvp_ros"] == mvp_ros.__version__
    assert document["versions"]["torch"] == torch.__version__
    assert document["weights_sha256"] == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    info = read_checkpoint_info(directory)
    assert info.env_args == {"env_name": "Lift"} and info.contract == contract and info.training == {"steps": 7}


def test_checkpoint_is_safetensors_and_json_only(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE, frame_stack=2)
    directory = save_checkpoint(tmp_path / "checkpoint", model, normalization)
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
        assert weights.metadata() == {"format": "mvp_ros.policy", "format_version": "1"}
        assert sorted(weights.keys()) == sorted(model.state_dict())


PICKLE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_CALLS = {("torch", "load"), ("torch", "save"), ("np", "load"), ("numpy", "load")}


def pickle_uses(path: Path) -> list[str]:
    """Imports of pickle-like modules, torch.load/save, np.load, and allow_pickle=True, found in the code itself."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            uses += [alias.name for alias in node.names if alias.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            uses.append(node.module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in PICKLE_CALLS:
                uses.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                uses.append("allow_pickle")
    return [f"{path}:{use}" for use in uses]


def test_no_module_of_the_package_loads_pickles():
    package = Path(mvp_ros.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert package / "policy" / "checkpoint.py" in sources
    assert [use for path in sources for use in pickle_uses(path)] == []


def test_the_pickle_scan_finds_pickle_use(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("import pickle\nimport torch\nstate = torch.load('x.pt')\n"
                        "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n")
    assert [use.rsplit(":", 1)[1] for use in pickle_uses(offender)] == ["pickle", "torch.load", "np.load",
                                                                      "allow_pickle"]


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory) -> Path:
    model, normalization = make_model("mvp", LOWDIM)
    return save_checkpoint(tmp_path_factory.mktemp("valid") / "checkpoint", model, normalization)


@pytest.fixture
def checkpoint(saved_checkpoint, tmp_path) -> Path:
    """A fresh copy of a valid checkpoint for each test to damage."""
    return Path(shutil.copytree(saved_checkpoint, tmp_path / "checkpoint"))


def edit_config(directory: Path, edit) -> None:
    document = json.loads((directory / "config.json").read_text())
    edit(document)
    (directory / "config.json").write_text(json.dumps(document))


def record_weights_hash(document: dict, directory: Path) -> None:
    document["weights_sha256"] = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()


def expect_error(directory: Path, *fragments: str) -> str:
    """Both load paths fail with a CheckpointError whose message holds every fragment."""
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(directory)
    with pytest.raises(CheckpointError) as error_from_policy:
        Policy.load(directory, device="cpu")
    message = str(error.value)
    assert str(error_from_policy.value) == message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_valid_copy_loads(checkpoint):
    load_checkpoint(checkpoint)


def test_missing_directory(tmp_path):
    expect_error(tmp_path / "nowhere", str(tmp_path / "nowhere"), "does not exist")


def test_missing_config(checkpoint):
    (checkpoint / "config.json").unlink()
    expect_error(checkpoint, str(checkpoint / "config.json"), "is missing")


def test_invalid_json(checkpoint):
    text = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text(text[: len(text) // 2])
    expect_error(checkpoint, str(checkpoint / "config.json"), "not valid JSON")


def test_json_that_is_not_an_object(checkpoint):
    (checkpoint / "config.json").write_text("[1, 2]")
    expect_error(checkpoint, str(checkpoint / "config.json"), "not an mvp_ros policy checkpoint")


def test_wrong_format_name(checkpoint):
    edit_config(checkpoint, lambda document: document.update(format="some.other.model"))
    expect_error(checkpoint, str(checkpoint / "config.json"), "'some.other.model'", "not an mvp_ros policy checkpoint")


def test_newer_format_version(checkpoint):
    edit_config(checkpoint, lambda document: document.update(format_version=2))
    expect_error(checkpoint, "format_version 2", "reads version 1", "upgrade mvp_ros")


def test_format_version_of_the_wrong_type(checkpoint):
    edit_config(checkpoint, lambda document: document.update(format_version="1"))
    message = expect_error(checkpoint, "format_version '1'")
    assert "upgrade" not in message


@pytest.mark.parametrize("entry", ["policy", "normalization", "weights_sha256"])
def test_missing_top_level_entry(checkpoint, entry):
    edit_config(checkpoint, lambda document: document.pop(entry))
    expect_error(checkpoint, str(checkpoint / "config.json"), f"lacks the {entry!r} entry")


def test_policy_field_missing(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].pop("horizon"))
    expect_error(checkpoint, str(checkpoint / "config.json"), "missing field(s): horizon")


def test_policy_field_unknown(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(dropout=0.1))
    expect_error(checkpoint, str(checkpoint / "config.json"), "unknown policy config field(s): dropout")


def test_policy_field_invalid(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(head="transformer"))
    expect_error(checkpoint, str(checkpoint / "config.json"), "head: unknown head 'transformer'")


def test_action_normalization_of_the_wrong_length(checkpoint):
    edit_config(checkpoint, lambda document: document["normalization"].update(action_max=[1.0, 2.0, 3.0]))
    expect_error(checkpoint, str(checkpoint / "config.json"), "normalization.action_max has 3 values for action_dim 2")


def test_observation_normalization_of_the_wrong_length(checkpoint):
    edit_config(checkpoint, lambda document: document["normalization"]["obs_std"].update(joints=[1.0]))
    expect_error(checkpoint, str(checkpoint / "config.json"), "observation 'joints'", "(3,)")


def test_observation_normalization_missing_for_a_key(checkpoint):
    edit_config(checkpoint, lambda document: document["normalization"]["obs_mean"].pop("joints"))
    expect_error(checkpoint, "observation 'joints'")


def test_normalization_entry_missing_a_statistic(checkpoint):
    edit_config(checkpoint, lambda document: document["normalization"].pop("action_min"))
    expect_error(checkpoint, str(checkpoint / "config.json"), "invalid policy or normalization entry", "action_min")


def test_missing_weights(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    expect_error(checkpoint, str(checkpoint / "model.safetensors"), "is missing")


def test_truncated_weights(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    expect_error(checkpoint, str(weights), "does not match the SHA-256")


def test_truncated_weights_with_a_matching_hash(checkpoint):
    """Even when config.json vouches for the damaged file, it is reported as unreadable."""
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    edit_config(checkpoint, lambda document: record_weights_hash(document, checkpoint))
    expect_error(checkpoint, str(weights), "cannot be read as safetensors")


def test_flipped_byte_in_weights(checkpoint):
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    expect_error(checkpoint, str(weights), "does not match the SHA-256")


def test_weights_from_another_checkpoint(checkpoint, tmp_path):
    model, normalization = make_model("mvp", LOWDIM, seed=1)
    other = save_checkpoint(tmp_path / "other", model, normalization)
    shutil.copy(other / "model.safetensors", checkpoint / "model.safetensors")
    expect_error(checkpoint, "does not match the SHA-256")


def test_tensors_of_another_width(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(hidden_dim=64))
    expect_error(checkpoint, str(checkpoint / "model.safetensors"), "'backbone.net.0.weight' has shape (32, ",
                 "needs (64, ")


def test_tensors_of_another_depth(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(depth=3))
    expect_error(checkpoint, str(checkpoint / "model.safetensors"), "does not fit the architecture",
                 "missing tensors ['backbone.net.6.bias', 'backbone.net.6.weight']")


def test_tensors_missing_an_image_encoder(checkpoint):
    def add_camera(document):
        document["policy"]["obs_shapes"]["camera"] = [12, 12, 3]

    edit_config(checkpoint, add_camera)
    expect_error(checkpoint, "does not fit the architecture", "image_encoders.camera")


@pytest.mark.parametrize("section, field, value", [
    ("normalization", "obs_mean", [0.5, 0.5, 0.5]),
    ("policy", "obs_shapes", [3]),
])
def test_entry_of_the_wrong_json_type(checkpoint, section, field, value):
    edit_config(checkpoint, lambda document: document[section].update({field: value}))
    expect_error(checkpoint, str(checkpoint / "config.json"), "invalid policy or normalization entry")


@pytest.mark.parametrize("field, edit", [
    ("action_min", lambda normalization: normalization.update(action_min=["a", "b"])),
    ("action_min", lambda normalization: normalization.update(action_min=[float("nan"), -50.0])),
    ("action_max", lambda normalization: normalization.update(action_max=[90.0, -40.0])),  # below action_min
    ("obs_mean", lambda normalization: normalization["obs_mean"].update(joints=[0.0, float("inf"), 0.0])),
    ("obs_std", lambda normalization: normalization["obs_std"].update(joints=[0.0, 1.0, 1.0])),
], ids=["not-a-number", "nan", "max-below-min", "infinite-mean", "zero-std"])
def test_normalization_values_that_would_give_nan_or_meaningless_actions(checkpoint, field, edit):
    """These loaded (or failed with a bare ValueError) and gave NaN or constant actions; see the report."""
    edit_config(checkpoint, lambda document: edit(document["normalization"]))
    expect_error(checkpoint, str(checkpoint / "config.json"), field)


def test_image_encoder_widths_round_trip_and_older_checkpoints_keep_their_encoder(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE, image_encoder_widths=(8, 16))
    directory = save_checkpoint(tmp_path / "narrow", model, normalization)
    loaded, _ = load_checkpoint(directory)
    assert loaded.config.image_encoder_widths == (8, 16)
    assert loaded.obs_encoder.image_encoders["camera"].keypoints.in_channels == 16

    legacy_model, _ = make_model("mvp", WITH_IMAGE, image_encoder_widths=(32, 64, 128))
    legacy = save_checkpoint(tmp_path / "legacy", legacy_model, normalization)
    edit_config(legacy, lambda document: document["policy"].pop("image_encoder_widths"))  # as written before the field
    assert load_checkpoint(legacy)[0].config.image_encoder_widths == (32, 64, 128)


def test_image_encoder_widths_must_suit_group_norm(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(image_encoder_widths=[16, 20]))
    expect_error(checkpoint, "image_encoder_widths: needs one to 8 multiples of 8", "[16, 20]")


@pytest.mark.parametrize("field, value, message", [
    ("depth", 1_000_000, "depth: must be an integer from 1 to 64, got 1000000"),
    ("hidden_dim", 10_000_000, "hidden_dim: must be an integer from 1 to 16384, got 10000000"),
    ("horizon", 10**9, "horizon: must be an integer from 1 to 1024"),
    ("action_dim", 100_000, "action_dim: must be an integer from 1 to 256"),
    ("frame_stack", 0, "frame_stack: must be an integer from 1 to 64, got 0"),
    ("image_feature_dim", 10**8, "image_feature_dim: must be an integer from 1 to 4096"),
    ("time_embed_dim", 10**8, "time_embed_dim: must be an integer from 4 to 1024"),
    ("mvp_steps", 10**9, "mvp_steps: must be an integer from 1 to 1000"),
    ("diffusion_train_steps", 10**9, "diffusion_train_steps: must be an integer from 1 to 10000"),
    ("depth", 4.5, "depth: must be an integer from 1 to 64, got 4.5"),
    ("depth", True, "depth: must be an integer from 1 to 64, got True"),
    ("hidden_dim", "512", "hidden_dim: must be an integer from 1 to 16384, got '512'"),
    ("obs_shapes", {"joints": [10**9]}, "obs_shapes['joints']: [1000000000] is outside (1 to 100000)"),
    ("obs_shapes", {"joints": [3], "camera": [100_000, 100_000, 3]},
     "obs_shapes['camera']: [100000, 100000, 3] is outside (1 to 4096, 1 to 4096, 1 to 4)"),
    ("obs_shapes", {f"key{i}": [1] for i in range(65)}, "obs_shapes: 65 observation keys, more than 64"),
    ("obs_shapes", {"joints": [3.5]}, "obs_shapes['joints']: [3.5] is neither a vector (D,) nor an image (H, W, C)"),
    ("image_encoder_widths", [8, 1_000_000],
     "image_encoder_widths: needs one to 8 multiples of 8 (GroupNorm of 8 groups) up to 2048"),
    ("image_encoder_widths", [8] * 100, "image_encoder_widths: needs one to 8 multiples of 8"),
    ("ivc_weight", float("nan"), "ivc_weight: must be a finite number, got nan"),
    ("time_logit_mean", float("inf"), "time_logit_mean: must be a finite number, got inf"),
    ("time_logit_std", 0.0, "time_logit_std: must be > 0, got 0.0"),
    ("adaptive_weight_eps", -1e-3, "adaptive_weight_eps: must be > 0, got -0.001"),
], ids=lambda value: str(value)[:24])
def test_every_size_and_number_of_the_policy_config_is_bounded(checkpoint, field, value, message):
    """Refused when config.json is read, before any weights or model (loading them is checked in a
    memory-limited process below: some of these would take gigabytes)."""
    edit_config(checkpoint, lambda document: document["policy"].update({field: value}))
    with pytest.raises(CheckpointError) as error:
        read_checkpoint_info(checkpoint)
    assert str(error.value).startswith(f"{checkpoint / 'config.json'}: invalid policy or normalization entry: {message}")


def test_ddim_cannot_take_more_steps_than_the_diffusion_was_trained_with(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(
        head="diffusion", diffusion_sampler="ddim", diffusion_train_steps=20, ddim_steps=50))
    expect_error(checkpoint, "ddim_steps: 50 is more than diffusion_train_steps (20)")


LOAD_UNDER_A_MEMORY_LIMIT = """
import json, resource, sys, time
import torch
from mvp_ros.policy.checkpoint import load_checkpoint
torch.set_num_threads(1)
headroom = int(sys.argv[1])
virtual = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
_, hard = resource.getrlimit(resource.RLIMIT_AS)  # kept: only a privileged process may raise it
limit = virtual + headroom if hard == resource.RLIM_INFINITY else min(virtual + headroom, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
for directory in sys.argv[2:]:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        load_checkpoint(directory)
        outcome = "loaded"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - started,
                      "peak_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024,
                      "imported_dynamo": "torch._dynamo" in sys.modules}))
"""


def test_a_config_that_asks_for_more_memory_than_its_weights_hold_is_refused_without_allocating(checkpoint, tmp_path):
    """Each load runs in a process allowed 1 GB more address space than it had after its imports:
    building what these configs describe (a 1.7 GB first layer, a million layers, and within every
    bound 1 GB or 69 GB of backbone weights or 19 GB of image encoder) would fail there with an
    allocator error naming no field, or take minutes."""
    edits = {"hidden_dim_10M": lambda policy: policy.update(hidden_dim=10_000_000),
             "depth_1M": lambda policy: policy.update(depth=1_000_000),
             "widest_within_bounds": lambda policy: policy.update(hidden_dim=16384),
             "largest_within_bounds": lambda policy: policy.update(hidden_dim=16384, depth=64),
             "largest_image_encoder": lambda policy: policy.update(obs_shapes={"joints": [3], "camera": [84, 84, 3]},
                                                                   image_encoder_widths=[2048] * 8, image_encoder_blocks=[8] * 8)}
    directories = [checkpoint]
    for name, edit in edits.items():
        directory = Path(shutil.copytree(checkpoint, tmp_path / name))
        edit_config(directory, lambda document: edit(document["policy"]))
        directories.append(directory)
    child = subprocess.run([sys.executable, "-c", LOAD_UNDER_A_MEMORY_LIMIT, str(2**30), *map(str, directories)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    valid, wide, deep, widest, largest, images = [json.loads(line) for line in child.stdout.splitlines()]
    assert valid["outcome"] == "loaded"  # the limit leaves room for a real checkpoint
    assert not valid["imported_dynamo"]  # the shapes check costs no torch._dynamo import (seconds)
    config_json, weights = tmp_path / "{}" / "config.json", tmp_path / "{}" / "model.safetensors"
    assert wide["outcome"] == (f"CheckpointError: {str(config_json).format('hidden_dim_10M')}: invalid policy or"
                               " normalization entry: hidden_dim: must be an integer from 1 to 16384, got 10000000")
    assert deep["outcome"] == (f"CheckpointError: {str(config_json).format('depth_1M')}: invalid policy or"
                               " normalization entry: depth: must be an integer from 1 to 64, got 1000000")
    assert widest["outcome"] == (f"CheckpointError: {str(weights).format('widest_within_bounds')}: tensor"
                                 " 'backbone.net.0.weight' has shape (32, 43), the architecture in config.json needs (16384, 43)")
    assert largest["outcome"].startswith(
        f"CheckpointError: {str(weights).format('largest_within_bounds')} does not fit the architecture in config.json:"
        " missing tensors ['backbone.net.10.bias', ")
    assert images["outcome"].startswith(
        f"CheckpointError: {str(weights).format('largest_image_encoder')} does not fit the architecture in config.json:"
        " missing tensors ['obs_encoder.image_encoders.camera.keypoints.bias', ")
    for refused in (wide, deep, widest, largest, images):
        assert refused["seconds"] < 2.0 and refused["peak_growth_mb"] < 50, refused


def test_augmentation_and_encoder_blocks_round_trip_and_older_checkpoints_load_without_augmentation(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE, image_augmentation="shift", image_augmentation_pixels=3,
                                      image_encoder_blocks=(2, 0, 1))
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "augmented", model, normalization))
    config = loaded.config
    assert (config.image_augmentation, config.image_augmentation_pixels, config.image_encoder_blocks) == ("shift", 3, (2, 0, 1))
    assert len(loaded.obs_encoder.image_encoders["camera"].stages) == 3 * 3 + 2 + 1
    assert make_model("mvp", WITH_IMAGE)[0].config.image_encoder_blocks == (0, 0, 1)  # one block, on the last stage

    older = save_checkpoint(tmp_path / "older", *make_model("mvp", WITH_IMAGE, image_encoder_blocks=(1, 1, 1)))
    # as written before these fields existed: a residual block on every stage, no augmentation
    edit_config(older, lambda document: [document["policy"].pop(name) for name in
                                         ("image_encoder_blocks", "image_augmentation", "image_augmentation_pixels")])
    config = load_checkpoint(older)[0].config
    assert (config.image_augmentation, config.image_encoder_blocks) == ("none", (1, 1, 1))


def test_encoder_blocks_need_one_count_per_stage(checkpoint):
    edit_config(checkpoint, lambda document: document["policy"].update(image_encoder_blocks=[1, 1]))
    expect_error(checkpoint, "image_encoder_blocks: needs one count from 0 to 8 per stage of image_encoder_widths"
                             " [16, 32, 64], got [1, 1]")
