"""`Policy`: chunk shape and units, observation checks, frame stacking, batched candidates, devices."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_checkpoint import HEAD_IDS, HEADS, WITH_IMAGE, make_model

from mvp_ros.policy import ObservationError, Policy, PolicyConfig, save_checkpoint
from mvp_ros.policy.networks import ObservationEncoder

ACTION_LOW = np.array([100.0, -50.0])
ACTION_HIGH = np.array([120.0, -40.0])
STACKED = {"joints": (3,)}


def image_observation(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"joints": rng.normal(size=3), "camera": rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)}


@pytest.fixture
def image_policy(tmp_path) -> Policy:
    model, normalization = make_model("mvp", WITH_IMAGE)
    return Policy.load(save_checkpoint(tmp_path / "checkpoint", model, normalization), device="cpu")


@pytest.mark.parametrize("head, overrides", HEADS, ids=HEAD_IDS)
def test_act_returns_one_chunk_in_the_data_units(head, overrides):
    model, _ = make_model(head, WITH_IMAGE, **overrides)
    policy = Policy(model, device="cpu")
    chunks = np.stack([policy.act(image_observation(seed)) for seed in range(8)])
    assert chunks.shape == (8, 4, 2) and chunks.dtype == np.float32
    assert np.all(chunks >= ACTION_LOW - 1e-3) and np.all(chunks <= ACTION_HIGH + 1e-3)
    assert np.all(chunks.std(axis=(0, 1)) > 0)  # not stuck on a bound


def test_regressor_chunk_is_the_network_output_mapped_back_to_action_units():
    model, _ = make_model("mlp", WITH_IMAGE)
    obs = image_observation()
    chunk = Policy(model, device="cpu").act(obs)
    batch = {key: torch.as_tensor(value)[None, None] for key, value in obs.items()}
    with torch.no_grad():
        cond = model.obs_encoder(batch)
        normalized = model.backbone(torch.zeros(1, 8), cond, torch.zeros(1), torch.zeros(1)).clamp(-1, 1)
    center, half_range = (ACTION_HIGH + ACTION_LOW) / 2, (ACTION_HIGH - ACTION_LOW) / 2
    np.testing.assert_allclose(chunk, normalized.view(4, 2).numpy() * half_range + center, rtol=1e-6)


@pytest.mark.parametrize("change, pattern", [
    (lambda obs: obs.pop("camera"), r"missing \['camera'\], unexpected \[\]"),
    (lambda obs: obs.update(gripper=np.zeros(2)), r"missing \[\], unexpected \['gripper'\]"),
    (lambda obs: obs.update(joints=np.zeros(4)), r"'joints' has shape \(4,\), the policy expects \(3,\)"),
    (lambda obs: obs.update(joints=np.zeros((1, 3))), r"'joints' has shape \(1, 3\), the policy expects \(3,\)"),
    (lambda obs: obs.update(camera=np.zeros((12, 12, 4), np.uint8)), r"'camera' has shape \(12, 12, 4\)"),
    (lambda obs: obs.update(camera=np.zeros((12, 12, 3), np.float32)), r"'camera' has dtype float32, expected uint8"),
    (lambda obs: obs.update(joints=np.array([0.0, np.nan, 1.0])), r"'joints' contains NaN or infinite"),
    (lambda obs: obs.update(joints=np.array([0.0, np.inf, 1.0])), r"'joints' contains NaN or infinite"),
])
def test_bad_observations_are_rejected_with_the_key_named(image_policy, change, pattern):
    obs = image_observation()
    change(obs)
    with pytest.raises(ObservationError, match=pattern):
        image_policy.act(obs)
    with pytest.raises(ObservationError, match=pattern):
        image_policy.sample(obs, 4)


def test_a_rejected_observation_does_not_enter_the_frame_stack():
    model, _ = make_model("mlp", STACKED, frame_stack=2)
    policy = Policy(model, device="cpu")
    first, second = np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.5, 2.0])
    policy.act({"joints": first})
    with pytest.raises(ObservationError):
        policy.act({"joints": np.array([np.nan, 0.0, 0.0])})
    np.testing.assert_array_equal(policy.act({"joints": second}), chunk_for_stack(model, [first, second]))


def chunk_for_stack(model, frames: list[np.ndarray]) -> np.ndarray:
    """The deterministic regressor's chunk for an explicit frame stack (oldest first)."""
    stack = torch.as_tensor(np.stack(frames))[None]
    with torch.no_grad():
        return model.sample({"joints": stack}, 1)[0, 0].numpy()


def test_frame_stack_repeats_the_first_frame_and_shifts_in_new_ones():
    model, _ = make_model("mlp", STACKED, frame_stack=3)
    policy = Policy(model, device="cpu")
    o1, o2, o3, o4 = (np.full(3, value) for value in (0.1, -0.7, 1.3, 2.0))
    assert not np.array_equal(chunk_for_stack(model, [o1, o2, o3]), chunk_for_stack(model, [o3, o2, o1]))

    np.testing.assert_array_equal(policy.act({"joints": o1}), chunk_for_stack(model, [o1, o1, o1]))
    np.testing.assert_array_equal(policy.act({"joints": o2}), chunk_for_stack(model, [o1, o1, o2]))
    np.testing.assert_array_equal(policy.act({"joints": o3}), chunk_for_stack(model, [o1, o2, o3]))
    np.testing.assert_array_equal(policy.act({"joints": o4}), chunk_for_stack(model, [o2, o3, o4]))
    policy.reset()
    np.testing.assert_array_equal(policy.act({"joints": o4}), chunk_for_stack(model, [o4, o4, o4]))


def test_frame_stack_keeps_copies_of_a_reused_observation_buffer():
    """A caller (a ROS node, say) may refill one array in place every tick."""
    model, _ = make_model("mlp", STACKED, frame_stack=2)
    policy = Policy(model, device="cpu")
    buffer = np.array([0.1, 0.2, 0.3])
    policy.act({"joints": buffer})
    first = buffer.copy()
    buffer[:] = [-1.0, 0.5, 2.0]
    np.testing.assert_array_equal(policy.act({"joints": buffer}), chunk_for_stack(model, [first, buffer]))


def test_frame_stack_of_images():
    model, _ = make_model("mlp", WITH_IMAGE, frame_stack=2)
    policy = Policy(model, device="cpu")
    a, b = image_observation(0), image_observation(1)

    def chunk(frames):
        batch = {key: torch.as_tensor(np.stack([frame[key] for frame in frames]))[None] for key in a}
        with torch.no_grad():
            return model.sample(batch, 1)[0, 0].numpy()

    np.testing.assert_array_equal(policy.act(a), chunk([a, a]))
    np.testing.assert_array_equal(policy.act(b), chunk([a, b]))
    assert not np.array_equal(chunk([a, b]), chunk([b, a]))


def test_frame_stack_of_several_low_dim_keys_and_a_camera():
    """The low-dim keys share one input tensor: each key must still see its own frames."""
    shapes = {"gripper": (2,), "camera": (12, 12, 3), "joints": (3,), "object": (4,)}
    model, _ = make_model("mlp", shapes, frame_stack=2)
    policy = Policy(model, device="cpu")
    rng = np.random.default_rng(4)
    frames = [{key: rng.integers(0, 256, shape, dtype=np.uint8) if len(shape) == 3 else rng.normal(size=shape)
               for key, shape in shapes.items()} for _ in range(3)]

    def chunk(stack):
        batch = {key: torch.as_tensor(np.stack([frame[key] for frame in stack]))[None] for key in shapes}
        with torch.no_grad():
            return model.sample(batch, 1)[0, 0].numpy()

    np.testing.assert_allclose(policy.act(frames[0]), chunk([frames[0], frames[0]]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(policy.act(frames[1]), chunk([frames[0], frames[1]]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(policy.act(frames[2]), chunk([frames[1], frames[2]]), rtol=0, atol=1e-5)
    swapped = frames[2] | {"joints": frames[2]["object"][:3], "object": np.r_[frames[2]["joints"], 0.0]}
    assert not np.allclose(chunk([frames[1], frames[2]]), chunk([frames[1], swapped]), atol=1e-5)


def test_sample_returns_all_candidates_from_one_network_call():
    model, _ = make_model("mvp", WITH_IMAGE)
    policy = Policy(model, device="cpu")
    batch_sizes = []
    model.backbone.register_forward_hook(lambda module, inputs, output: batch_sizes.append(inputs[0].shape[0]))
    candidates = policy.sample(image_observation(), 16)
    assert candidates.shape == (16, 4, 2)
    assert batch_sizes == [16]
    assert len(np.unique(candidates.reshape(16, -1), axis=0)) == 16


def test_reset_with_a_seed_replays_the_noise():
    model, _ = make_model("mvp", WITH_IMAGE)
    policy = Policy(model, device="cpu")
    obs = image_observation()
    policy.reset(seed=11)
    first = [policy.act(obs) for _ in range(3)]
    assert not np.array_equal(first[0], first[1])
    policy.reset(seed=11)
    np.testing.assert_array_equal(np.stack([policy.act(obs) for _ in range(3)]), np.stack(first))
    policy.reset()  # no seed: the noise stream goes on
    assert not np.array_equal(policy.act(obs), first[0])


def test_policy_properties_describe_the_checkpoint(image_policy):
    assert image_policy.obs_keys == ["joints", "camera"]
    assert (image_policy.horizon, image_policy.action_dim) == (4, 2)
    assert image_policy.info is not None and image_policy.info.config == image_policy.config


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the error is for machines without it")
def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE)
    directory = save_checkpoint(tmp_path / "checkpoint", model, normalization)
    with pytest.raises(RuntimeError, match=re.escape("device 'cuda' was requested but torch sees no CUDA device")):
        Policy.load(directory, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        Policy(model, device="cuda:0")


def test_auto_device_is_cpu_without_cuda(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE)
    policy = Policy.load(save_checkpoint(tmp_path / "auto", model, normalization), device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert policy.device.type == expected
    assert next(policy.model.parameters()).device.type == expected
    assert policy.act(image_observation()).shape == (4, 2)


def test_encoder_standardizes_each_key_and_frame_with_its_own_statistics():
    """The fused x * scale + shift over all keys and frames equals (x - mean) / std per key."""
    config = PolicyConfig(head="mvp", action_dim=2, horizon=4, obs_shapes={"a": (2,), "b": (3,)}, frame_stack=3,
                          hidden_dim=32, depth=2)
    mean = {"a": [1.0, -2.0], "b": [0.5, 0.0, 10.0]}
    std = {"a": [2.0, 0.5], "b": [1.0, 4.0, 0.1]}
    encoder = ObservationEncoder(config, mean, std)
    obs = {"a": torch.randn(2, 3, 2), "b": torch.randn(2, 3, 3)}
    expected = torch.cat([((obs[key] - torch.tensor(mean[key])) / torch.tensor(std[key])).flatten(1)
                          for key in ("a", "b")], dim=-1)
    torch.testing.assert_close(encoder(obs), expected)


def test_image_policy_runs_channels_last_and_samples_what_the_checkpoint_does(tmp_path):
    model, normalization = make_model("mvp", WITH_IMAGE)
    policy = Policy.load(save_checkpoint(tmp_path / "checkpoint", model, normalization), device="cpu")
    weights = [p for p in policy.model.obs_encoder.image_encoders.parameters() if p.dim() == 4]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert not weights[0].is_contiguous()  # a 3x3 kernel: NCHW and NHWC strides differ
    obs = image_observation()
    batch = {key: torch.as_tensor(value)[None, None] for key, value in obs.items()}
    noise = torch.randn(1, model.config.chunk_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.sample_with_noise(batch, noise)[0, 0].numpy()  # the contiguous original
    policy.reset(seed=3)
    np.testing.assert_allclose(policy.act(obs), expected, rtol=0, atol=1e-5)
    save_checkpoint(tmp_path / "resaved", policy.model, normalization)  # channels-last weights save as they are
    first_conv = "obs_encoder.image_encoders.camera.stages.0.weight"
    resaved = Policy.load(tmp_path / "resaved", device="cpu").model.state_dict()[first_conv]
    np.testing.assert_array_equal(resaved.numpy(), model.state_dict()[first_conv].numpy())


def test_the_shipped_camera_policy_sees_only_what_a_robot_measures():
    """models/lift_image: the two cameras and proprioception, no simulator state such as `object`."""
    from mvp_ros.resources import package_file

    policy = Policy.load(package_file("models", "lift_image"), device="cpu")
    assert policy.config.obs_shapes == {"agentview_image": (84, 84, 3), "robot0_eye_in_hand_image": (84, 84, 3),
                                        "robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,)}
    assert policy.config.image_augmentation == "crop"
    assert policy.info.training["settings"]["obs_keys"] == list(policy.config.obs_shapes)
    rng = np.random.default_rng(0)
    obs = {key: rng.integers(0, 256, shape, dtype=np.uint8) if len(shape) == 3 else rng.normal(size=shape)
           for key, shape in policy.config.obs_shapes.items()}
    chunk = policy.act(obs)
    assert chunk.shape == (5, 7) and np.all(np.isfinite(chunk))
