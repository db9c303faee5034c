"""The simulation's state as the observation contract's messages: the contract read backwards.

Contract observation keys are the simulator's observation keys (`robot0_eef_pos`, `object`,
`agentview_image`, ...). For each topic of the contract the bridge builds one message:
  sensor_msgs/JointState         every arm and gripper joint of the robot, by name, with the
                                 positions and velocities robosuite observes (robot0_joint_pos,
                                 robot0_gripper_qpos, ...: what datasets store; robosuite samples
                                 them within the step, so they can differ from the final qpos)
  geometry_msgs/PoseStamped      the keys read from it (field position / orientation / pose)
  std_msgs/Float64MultiArray     the key's values
  sensor_msgs/Image              the key's image, rgb8, right side up, data assigned as bytes
  sensor_msgs/CompressedImage    the same image as PNG (lossless: it decodes to the same pixels) or
                                 JPEG (lossy, quality 95), format as image_transport's
                                 compressed plugin writes it ("rgb8; png compressed bgr8")
Header stamps are the simulation time of the step (the /clock the bridge publishes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray

from mvp_ros.data.contract import (CompressedImageObservation, Contract, ImageObservation, JointStateObservation,
                                   ObservationSpec, PoseObservation)

FRAME_ID = "world"
COMPRESSED_IMAGE_FORMATS = ("png", "jpeg")
JPEG_QUALITY = 95  # image_transport's compressed plugin's default
_POSE_SLICES = {"position": slice(0, 3), "orientation": slice(3, 7), "pose": slice(0, 7)}


class BridgeError(ValueError):
    """A contract the simulation cannot publish; the message names the key or joint."""


@dataclass(frozen=True)
class JointGroup:
    """Joints whose positions and velocities are the simulator observations `position_key`, `velocity_key`."""

    names: tuple[str, ...]
    position_key: str
    velocity_key: str


class ContractMessages:
    """Builds the messages of every observation topic of `contract` from a simulator observation."""

    def __init__(self, contract: Contract, observation: dict[str, np.ndarray], joint_groups: list[JointGroup],
                 compressed_image_format: str = "png") -> None:
        self.compressed_image_format = compressed_image_format
        self.joint_groups = joint_groups
        self.joint_names = [name for group in joint_groups for name in group.names]
        for group in joint_groups:
            for key in (group.position_key, group.velocity_key):
                if np.shape(observation.get(key)) != (len(group.names),):
                    raise BridgeError(f"the simulation's observation {key!r} does not give the {len(group.names)}"
                                      f" values of joints {list(group.names)}")
        self.topics: dict[str, list[ObservationSpec]] = {}
        for key, spec in contract.observations.items():
            _check_key(spec, observation, self.joint_names)
            self.topics.setdefault(spec.topic, []).append(spec)

    def build(self, observation: dict[str, np.ndarray], stamp: Any) -> dict[str, Any]:
        """topic -> message for this step."""
        messages = {}
        for topic, specs in self.topics.items():
            spec = specs[0]
            if isinstance(spec, JointStateObservation):
                msg = JointState(
                    name=self.joint_names,
                    position=[float(v) for group in self.joint_groups for v in observation[group.position_key]],
                    velocity=[float(v) for group in self.joint_groups for v in observation[group.velocity_key]],
                )
            elif isinstance(spec, PoseObservation):
                msg = _pose(specs, observation)
            elif isinstance(spec, CompressedImageObservation):
                msg = compressed_image(observation[spec.key], self.compressed_image_format)
            elif isinstance(spec, ImageObservation):
                image = observation[spec.key]
                msg = Image(height=image.shape[0], width=image.shape[1], encoding="rgb8", step=image.shape[1] * 3)
                msg.data = np.ascontiguousarray(image).tobytes()
            else:
                messages[topic] = Float64MultiArray(data=np.asarray(observation[spec.key], dtype=np.float64).tolist())
                continue
            msg.header.stamp = stamp
            msg.header.frame_id = FRAME_ID
            messages[topic] = msg
        return messages


def compressed_image(image: np.ndarray, image_format: str) -> CompressedImage:
    """An rgb8 image (H, W, 3) as a CompressedImage; OpenCV encodes BGR, so the channels are swapped first."""
    import cv2  # here, not at the top: only a bridge publishing compressed images needs it

    parameters = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpeg" else []
    encoded, data = cv2.imencode(f".{image_format}", np.ascontiguousarray(image[..., ::-1]), parameters)
    if not encoded:
        raise BridgeError(f"OpenCV could not encode a {image.shape} image as {image_format}")
    msg = CompressedImage(format=f"rgb8; {image_format} compressed bgr8")
    msg.data = data.tobytes()
    return msg


def _pose(specs: list[ObservationSpec], observation: dict[str, np.ndarray]) -> PoseStamped:
    pose = np.zeros(7)
    pose[6] = 1.0  # identity orientation unless a key gives it
    for spec in specs:
        pose[_POSE_SLICES[spec.field]] = observation[spec.key]
    msg = PoseStamped()
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose[:3])
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in pose[3:])
    return msg


def _check_key(spec: ObservationSpec, observation: dict[str, np.ndarray], joint_names: list[str]) -> None:
    if isinstance(spec, JointStateObservation):
        missing = [joint for joint in spec.joints if joint not in joint_names]
        if missing:
            raise BridgeError(f"contract key {spec.key!r} reads joints {missing}, which the simulated robot lacks"
                              f" (it has {joint_names})")
        if spec.field == "effort":
            raise BridgeError(f"contract key {spec.key!r} reads joint effort, which the simulation bridge does not publish")
        return
    if not isinstance(spec, (PoseObservation, ImageObservation)) and spec.msgtype != "std_msgs/msg/Float64MultiArray":
        raise BridgeError(f"contract key {spec.key!r} is a {spec.msgtype} source, which the simulation bridge cannot publish")
    if spec.key not in observation:
        raise BridgeError(f"contract key {spec.key!r} is not an observation of the simulation (it has {sorted(observation)})")
    shape = np.shape(observation[spec.key])
    if shape != tuple(spec.shape):
        raise BridgeError(f"contract key {spec.key!r} has shape {tuple(spec.shape)}, the simulation's {spec.key} has {shape}")
    if isinstance(spec, ImageObservation) and spec.encoding != "rgb8":
        raise BridgeError(f"contract key {spec.key!r} stores {spec.encoding}; the simulation bridge publishes rgb8 images")
