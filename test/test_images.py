"""Camera images at any resolution (mvp_ros/data/images.py through the contract): CompressedImage
`format` strings as image_transport and other publishers write them, crop then resize to the policy's
size, and the same pixels from a rosbags-written bag (MCAP and sqlite3) as from messages received
over DDS and decoded the way the policy node decodes them."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage

from mvp_ros.data.contract import Contract, MessageError
from mvp_ros.data.images import compressed_layout
from mvp_ros.tick.observations import ObservationBuffer

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ros_peer import Peer, domain_environment  # noqa: E402
from test_bag2hdf5 import MS, T0, TYPES, convert, float_array, header, joint_state, write_bag  # noqa: E402

WIDTH, HEIGHT = 640, 480
CROP = {"x": 80, "y": 0, "width": 480, "height": 480}
TOPIC = "/wrist/image_raw/compressed"
CONTRACT = {
    "contract_version": 1, "robot": "camera_arm", "control_rate_hz": 10,
    "observations": {
        "joint_pos": {"type": "sensor_msgs/msg/JointState", "topic": "/joint_states", "joints": ["j1"]},
        "wrist": {"type": "sensor_msgs/msg/CompressedImage", "topic": TOPIC,
                  "image": {"width": 84, "height": 84, "encoding": "rgb8", "crop": CROP, "resize": "area"},
                  "align": {"rule": "asof", "tolerance_s": 0.05}},
    },
    "action": {"type": "std_msgs/msg/Float64MultiArray", "topic": "/command", "names": ["j1"],
               "limits": {"lower": [-1], "upper": [1]}},
}


def scene(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A distinct rgb8 image per index, with detail finer than the policy's pixels."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([(rows * 3 + index * 11) % 256, (columns * 5 + index * 7) % 256, (rows ^ columns) % 256],
                    axis=2).astype(np.uint8)


def encoded(rgb: np.ndarray, extension: str = ".jpg", channel_order: str = "bgr8") -> bytes:
    ok, data = cv2.imencode(extension, rgb[..., ::-1] if channel_order == "bgr8" else rgb)
    assert ok
    return data.tobytes()


def rosbags_compressed(data: bytes, image_format: str, stamp: int = T0):
    return TYPES["sensor_msgs/msg/CompressedImage"](header=header(stamp), format=image_format,
                                                   data=np.frombuffer(data, np.uint8))


def reference(data: bytes) -> np.ndarray:
    """What the policy should see, computed with OpenCV directly: decode, crop, area-resize, to RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    cropped = bgr[CROP["y"]: CROP["y"] + CROP["height"], CROP["x"]: CROP["x"] + CROP["width"]]
    return cv2.resize(cropped, (84, 84), interpolation=cv2.INTER_AREA)[..., ::-1]


WRIST = Contract.from_dict(CONTRACT).observations["wrist"]


@pytest.mark.parametrize("image_format, layout", [
    ("rgb8; jpeg compressed bgr8", ("jpeg", "bgr8")),
    ("bgr8; png compressed rgb8", ("png", "rgb8")),
    ("mono8; jpeg compressed mono8", ("jpeg", "mono8")),
    ("jpeg", ("jpeg", "bgr8")),
    ("JPG", ("jpeg", "bgr8")),
    ("png", ("png", "bgr8")),
    ("", (None, "bgr8")),
])
def test_compressed_formats_name_the_codec_and_the_channel_order(image_format, layout) -> None:
    assert compressed_layout(image_format) == layout


@pytest.mark.parametrize("image_format, message", [
    ("16UC1; compressedDepth png", "has format '16UC1; compressedDepth png', which is not a supported compression"),
    ("h264", "has format 'h264', which is not a supported compression"),
    ("rgb16; png compressed bgr16", "with format 'rgb16; png compressed bgr16' was compressed from bgr16; supported: 8-bit"),
])
def test_unsupported_formats_are_named(image_format, message) -> None:
    with pytest.raises(MessageError, match=f"wrist: {TOPIC} CompressedImage {message}"):
        WRIST.extract(rosbags_compressed(encoded(scene(0)), image_format))


def test_the_channel_order_follows_the_format_and_the_codec_must_match_the_data() -> None:
    rgb = scene(1)
    small = Contract.from_dict(CONTRACT | {"observations": {"wrist": CONTRACT["observations"]["wrist"] | {
        "image": {"width": WIDTH, "height": HEIGHT, "encoding": "rgb8"}}}}).observations["wrist"]
    for image_format, order in [("rgb8; png compressed bgr8", "bgr8"), ("rgb8; png compressed rgb8", "rgb8"),
                                ("png", "bgr8")]:
        np.testing.assert_array_equal(small.extract(rosbags_compressed(encoded(rgb, ".png", order), image_format)), rgb)
    with pytest.raises(MessageError, match="with format 'png' holds a JPEG, not a PNG"):
        small.extract(rosbags_compressed(encoded(rgb), "png"))


def test_crop_then_resize_gives_opencvs_pixels_and_sizes_are_checked() -> None:
    data = encoded(scene(2))
    np.testing.assert_array_equal(WRIST.extract(rosbags_compressed(data, "rgb8; jpeg compressed bgr8")), reference(data))
    with pytest.raises(MessageError, match="is 320x240, too small for the contract's crop of 480x480 at x 80, y 0"):
        WRIST.extract(rosbags_compressed(encoded(scene(2, 320, 240)), "jpeg"))
    unresized = Contract.from_dict(CONTRACT | {"observations": {"wrist": CONTRACT["observations"]["wrist"] | {
        "image": {"width": 84, "height": 84, "encoding": "rgb8"}}}}).observations["wrist"]
    with pytest.raises(MessageError, match=r"is 640x480, the contract says 84x84 \(set image.resize"):
        unresized.extract(rosbags_compressed(data, "jpeg"))


def test_mono8_resizes_to_one_channel() -> None:
    grey = Contract.from_dict(CONTRACT | {"observations": {"wrist": CONTRACT["observations"]["wrist"] | {
        "image": {"width": 84, "height": 84, "encoding": "mono8", "resize": "area"}}}}).observations["wrist"]
    ok, data = cv2.imencode(".png", scene(3)[..., 0])
    assert ok
    expected = cv2.resize(scene(3)[..., 0], (84, 84), interpolation=cv2.INTER_AREA)[..., None]
    np.testing.assert_array_equal(grey.extract(rosbags_compressed(data.tobytes(), "mono8; png compressed mono8")),
                                  expected)


FRAMES = 12  # 0.4 s at 30 Hz; the 10 Hz ticks take frames 0, 3, 6, 9


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return [encoded(scene(index)) for index in range(FRAMES)]


def camera_bag(path: Path, frames: list[bytes], storage: str) -> Path:
    messages = []
    for index, data in enumerate(frames):
        stamp = T0 + index * 10**9 // 30
        messages.append((TOPIC, "sensor_msgs/msg/CompressedImage", stamp + MS,
                         rosbags_compressed(data, "rgb8; jpeg compressed bgr8", stamp)))
    for index in range(40):
        stamp = T0 + index * 10 * MS
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", stamp + MS, joint_state(stamp, ["j1"], [0.0])))
        if index % 10 == 0:
            messages.append(("/command", "std_msgs/msg/Float64MultiArray", stamp + 2 * MS, float_array([0.0])))
    return write_bag(path, sorted(messages, key=lambda message: message[2]), storage)


def received_over_dds(frames: list[bytes]) -> list[np.ndarray]:
    """Each frame published by one DDS participant, received serialized by another (as the policy
    node subscribes), deserialized with rclpy and read through the node's observation buffer."""
    env = domain_environment()
    sender, receiver = Peer(env, "camera"), Peer(env, "policy")
    received: list[bytes] = []
    try:
        receiver.node.create_subscription(CompressedImage, TOPIC, received.append, 100, raw=True)
        publisher = sender.node.create_publisher(CompressedImage, TOPIC, 100)
        sender.wait_for(lambda: publisher.get_subscription_count() > 0, 20, "the subscription")
        for data in frames:
            publisher.publish(CompressedImage(format="rgb8; jpeg compressed bgr8", data=data))
            time.sleep(0.01)
        sender.wait_for(lambda: len(received) == len(frames), 20, "every frame")
    finally:
        sender.close()
        receiver.close()
    buffer = ObservationBuffer({"wrist": WRIST}, period_ns=100 * MS)
    images = []
    for raw in received:
        assert buffer.accept(TOPIC, deserialize_message(raw, CompressedImage), 0, 0, 0.0) is None
        images.append(buffer.observation(["wrist"])["wrist"])
    return images


@pytest.mark.slow
def test_a_640x480_jpeg_camera_gives_the_same_84x84_pixels_in_conversion_and_live(tmp_path: Path, frames) -> None:
    live = received_over_dds(frames)
    for data, image in zip(frames, live):
        np.testing.assert_array_equal(image, reference(data))
    for storage in ("mcap", "sqlite3"):
        assert convert(tmp_path, camera_bag(tmp_path / storage, frames, storage), contract=CONTRACT) == 0
        with h5py.File(tmp_path / "out.hdf5") as file:
            converted = file["data/demo_0/obs/wrist"][()]
        assert converted.shape == (4, 84, 84, 3)
        for tick, image in enumerate(converted):
            np.testing.assert_array_equal(image, live[3 * tick])
