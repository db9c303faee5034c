"""Image augmentation: random crop and shift windows in training, their deterministic transform at
inference, through the encoder, `mvp train` and `Policy.load`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from mvp_ros.cli import main
from mvp_ros.data.robomimic import Episode, write_robomimic
from mvp_ros.policy import Policy, PolicyConfig
from mvp_ros.policy.augment import augment_images, inference_images
from mvp_ros.policy.config import ConfigError
from mvp_ros.policy.networks import ObservationEncoder

PIXELS = 2


def numbered_images(batch: int, height: int = 10, width: int = 12, channels: int = 6) -> torch.Tensor:
    """uint8 (B, H, W, K) whose pixel (b, y, x) holds b, y, x, so a window shows where it came from."""
    images = torch.zeros(batch, height, width, channels, dtype=torch.uint8)
    images[..., 0] = torch.arange(batch)[:, None, None]
    images[..., 1] = torch.arange(height)[None, :, None]
    images[..., 2] = torch.arange(width)[None, None, :]
    images[..., 3:] = 100 + torch.arange(channels - 3)
    return images


def test_a_random_crop_takes_one_whole_window_per_image_with_its_own_offset():
    images = numbered_images(64)
    windows = augment_images(images, "crop", PIXELS, torch.Generator().manual_seed(0))
    assert windows.shape == (64, 10 - 2 * PIXELS, 12 - 2 * PIXELS, 6) and windows.dtype == torch.uint8
    top, left = windows[:, 0, 0, 1].long(), windows[:, 0, 0, 2].long()
    for index, window in enumerate(windows):
        # a window of this image: rows and columns consecutive from its own top-left corner, all channels kept
        assert torch.equal(window, images[index, top[index]:top[index] + 6, left[index]:left[index] + 8])
    assert set(top.tolist()) == set(left.tolist()) == set(range(2 * PIXELS + 1))


def test_a_random_shift_repeats_the_border_and_keeps_the_size():
    images = numbered_images(64)
    shifted = augment_images(images, "shift", PIXELS, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    rows, columns = shifted[..., 1].long(), shifted[..., 2].long()
    shift_y = rows[:, 5, 0] - 5  # an interior pixel moved by the image's shift
    shift_x = columns[:, 0, 6] - 6
    assert set(shift_y.tolist()) == set(shift_x.tolist()) == set(range(-PIXELS, PIXELS + 1))
    expected_rows = (torch.arange(10)[None, :] + shift_y[:, None]).clamp(0, 9)
    expected_columns = (torch.arange(12)[None, :] + shift_x[:, None]).clamp(0, 11)
    assert torch.equal(rows, expected_rows[:, :, None].expand_as(rows))
    assert torch.equal(columns, expected_columns[:, None, :].expand_as(columns))
    assert torch.equal(shifted[..., 0].long(), torch.arange(64)[:, None, None].expand(64, 10, 12))


def test_inference_takes_the_centre_for_a_crop_and_the_whole_image_otherwise():
    images = numbered_images(3)
    assert torch.equal(inference_images(images, "crop", PIXELS), images[:, PIXELS:-PIXELS, PIXELS:-PIXELS])
    assert inference_images(images, "shift", PIXELS) is images
    assert augment_images(images, "none", PIXELS) is images


def encoder_and_batch(augmentation: str) -> tuple[ObservationEncoder, dict[str, torch.Tensor]]:
    config = PolicyConfig(head="mvp", action_dim=2, horizon=1, obs_shapes={"camera": (16, 16, 3)}, frame_stack=2,
                          image_feature_dim=8, image_augmentation=augmentation, image_augmentation_pixels=PIXELS)
    torch.manual_seed(0)
    encoder = ObservationEncoder(config, {}, {})
    batch = {"camera": torch.randint(0, 256, (4, 2, 16, 16, 3), dtype=torch.uint8)}
    return encoder, batch


@pytest.mark.parametrize("augmentation", ["crop", "shift"])
def test_the_encoder_augments_in_training_mode_only(augmentation):
    encoder, batch = encoder_and_batch(augmentation)
    generator = torch.Generator().manual_seed(0)
    first, second = encoder(batch, generator), encoder(batch, generator)
    assert not torch.allclose(first, second)
    assert torch.equal(encoder(batch, torch.Generator().manual_seed(5)), encoder(batch, torch.Generator().manual_seed(5)))

    encoder.eval()
    deterministic = encoder(batch)
    torch.testing.assert_close(encoder(batch, torch.Generator().manual_seed(9)), deterministic, rtol=0, atol=0)
    # the inference transform is the same encoder on the centre window (crop) or the whole image (shift)
    plain, _ = encoder_and_batch("none")
    plain.load_state_dict(encoder.state_dict())
    centre = batch["camera"][:, :, PIXELS:-PIXELS, PIXELS:-PIXELS] if augmentation == "crop" else batch["camera"]
    torch.testing.assert_close(plain.eval()({"camera": centre}), deterministic)


def test_augmentation_settings_are_checked():
    shapes = {"camera": (8, 8, 3)}
    with pytest.raises(ConfigError, match="image_augmentation: 'flip' is not one of none, crop, shift"):
        PolicyConfig(head="mvp", action_dim=2, horizon=1, obs_shapes=shapes, image_augmentation="flip")
    with pytest.raises(ConfigError, match=r"cropping 4 pixels from each side leaves nothing of 'camera' \(8x8\)"):
        PolicyConfig(head="mvp", action_dim=2, horizon=1, obs_shapes=shapes, image_augmentation="crop")
    # a shift of any size keeps the image whole
    PolicyConfig(head="mvp", action_dim=2, horizon=1, obs_shapes=shapes, image_augmentation="shift")


@pytest.fixture(scope="module")
def camera_dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    episodes = [Episode(obs={"position": rng.normal(size=(20, 3)).astype(np.float32),
                             "camera": rng.integers(0, 256, size=(20, 12, 12, 3), dtype=np.uint8)},
                        actions=rng.uniform(-1, 1, size=(20, 2))) for _ in range(4)]
    path = tmp_path_factory.mktemp("data") / "camera.hdf5"
    write_robomimic(path, episodes, env_args={"env_name": "Toy", "type": 1, "env_kwargs": {}})
    return path


@pytest.mark.parametrize("augmentation", ["crop", "shift"])
def test_a_trained_checkpoint_keeps_its_augmentation_and_acts_deterministically(camera_dataset, tmp_path,
                                                                               augmentation):
    out = tmp_path / augmentation
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"policy": {"hidden_dim": 32, "depth": 2, "image_augmentation": augmentation,
                                                 "image_augmentation_pixels": PIXELS}, "threads": 1}))
    assert main(["train", "--config", str(config), "--dataset", str(camera_dataset), "--out", str(out),
                 "--obs-keys", "position,camera", "--steps", "4", "--batch-size", "8", "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["policy"]["image_augmentation"] == augmentation

    policy = Policy.load(out, device="cpu")
    assert (policy.config.image_augmentation, policy.config.image_augmentation_pixels) == (augmentation, PIXELS)
    rng = np.random.default_rng(1)
    obs = {"position": rng.normal(size=3).astype(np.float32),
           "camera": rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)}
    policy.reset(seed=7)
    first = policy.act(obs)
    policy.reset(seed=7)
    np.testing.assert_array_equal(policy.act(obs), first)
