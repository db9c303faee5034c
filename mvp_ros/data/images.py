"""Camera images to the policy's size: decode, crop, resize, reorder channels.

The contract's ImageObservation and CompressedImageObservation call these functions, and both bag
conversion and the live policy node go through the contract, so a camera's pixels are computed by
one implementation in training and in deployment. Errors are ValueError with a sentence the
contract prefixes with the key and topic.

CompressedImage `format`: image_transport's compressed plugin writes
`"<raw encoding>; <jpeg|png> compressed <encoding given to the encoder>"` (e.g. `"rgb8; jpeg compressed
bgr8"`); other publishers write a plain `"jpeg"`, `"jpg"` or `"png"`. OpenCV's decoder returns the
channels in the order they were given to the encoder, which the part after `compressed` names
(bgr8 for a standard file, and for a plain format).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
RESIZE_INTERPOLATIONS = ("area", "linear", "nearest")
_MAGIC = {"jpeg": b"\xff\xd8", "png": b"\x89PNG"}
_CODEC_NAMES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_DECODED_ORDERS = {"bgr8": "bgr8", "rgb8": "rgb8", "mono8": "mono8", "bgra8": "bgr8", "rgba8": "rgb8"}


@dataclass(frozen=True)
class Crop:
    """A rectangle of the camera image, in its pixels; row 0 and column 0 at the top left."""

    x: int
    y: int
    width: int
    height: int

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class ImageFit:
    """What the policy sees of a camera: `crop` (optional) first, then `resize` (an interpolation,
    or None: the image must already have the size), to width x height in `encoding`."""

    width: int
    height: int
    encoding: str
    crop: Crop | None = None
    resize: str | None = None

    def __call__(self, pixels: np.ndarray, encoding: str) -> np.ndarray:
        """(H, W, C) uint8 pixels in `encoding` (rgb8, bgr8 or mono8) -> (height, width, channels of
        self.encoding), contiguous."""
        if self.encoding == "mono8" and encoding != "mono8":
            raise ValueError(f"is {encoding}; the contract stores mono8 and does not convert colour to grey")
        if self.crop is not None:
            pixels = self._cropped(pixels)
        if pixels.shape[:2] != (self.height, self.width):
            if self.resize is None:
                raise ValueError(f"is {pixels.shape[1]}x{pixels.shape[0]}{' after the crop' if self.crop else ''}, the"
                                 f" contract says {self.width}x{self.height} (set image.resize, or resize upstream)")
            pixels = _resized(pixels, self.width, self.height, self.resize)
        if self.encoding == "mono8":
            return np.ascontiguousarray(pixels)
        if encoding == "bgr8":
            return np.ascontiguousarray(pixels[..., ::-1])
        if encoding == "mono8":
            return np.repeat(pixels, 3, axis=2)
        return np.ascontiguousarray(pixels)

    def _cropped(self, pixels: np.ndarray) -> np.ndarray:
        crop, (height, width) = self.crop, pixels.shape[:2]
        if crop.x + crop.width > width or crop.y + crop.height > height:
            raise ValueError(f"is {width}x{height}, too small for the contract's crop of {crop.width}x{crop.height}"
                             f" at x {crop.x}, y {crop.y}")
        return pixels[crop.y : crop.y + crop.height, crop.x : crop.x + crop.width]

    def to_dict(self) -> dict:
        fields = {"width": self.width, "height": self.height, "encoding": self.encoding}
        if self.crop is not None:
            fields["crop"] = self.crop.to_dict()
        if self.resize is not None:
            fields["resize"] = self.resize
        return fields


def _resized(pixels: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    import cv2  # here, not at the top: it adds ~0.1 s to every import of the contract

    flags = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}[interpolation]
    resized = cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=flags)
    return resized.reshape(height, width, pixels.shape[2])


def raw_pixels(encoding: str, width: int, height: int, step: int, data: bytes | np.ndarray) -> np.ndarray:
    """sensor_msgs/Image fields -> (height, width, channels) uint8 (row padding per `step` removed)."""
    if encoding.lower() not in CHANNELS:
        raise ValueError(f"has encoding {encoding!r}; supported: rgb8, bgr8, mono8")
    channels = CHANNELS[encoding.lower()]
    data = np.frombuffer(data, dtype=np.uint8)
    if step < width * channels or len(data) < step * height:
        raise ValueError(f"is inconsistent: {width}x{height} {encoding.lower()}, step {step}, {len(data)} data bytes")
    rows = data[: step * height].reshape(height, step)
    return rows[:, : width * channels].reshape(height, width, channels)


def compressed_layout(image_format: str) -> tuple[str | None, str]:
    """A CompressedImage `format` -> (codec 'jpeg' or 'png', or None for an empty format, which is
    told by the data; the channel order the decoder returns for colour images)."""
    text = image_format.strip().lower()
    if not text:
        return None, "bgr8"
    if ";" not in text:
        codec = _CODEC_NAMES.get(text)
        if codec is None:
            raise ValueError(_unsupported(image_format))
        return codec, "bgr8"
    words = text.split(";", 1)[1].split()
    codec = _CODEC_NAMES.get(words[0]) if words else None
    if codec is None or words[1:2] != ["compressed"] or len(words) > 3:
        raise ValueError(_unsupported(image_format))
    given = words[2] if len(words) == 3 else "bgr8"
    if given not in _DECODED_ORDERS:
        raise ValueError(f"with format {image_format!r} was compressed from {given}; supported: 8-bit"
                         f" {sorted(_DECODED_ORDERS)}")
    return codec, _DECODED_ORDERS[given]


def _unsupported(image_format: str) -> str:
    return (f"has format {image_format!r}, which is not a supported compression; supported: image_transport's"
            " '<encoding>; jpeg compressed <encoding>' or '...; png compressed ...', or plain 'jpeg', 'jpg', 'png'")


def decode_compressed(image_format: str, data: bytes | np.ndarray) -> tuple[np.ndarray, str]:
    """A CompressedImage's format and data -> ((H, W, C) uint8 pixels, their encoding)."""
    import cv2

    codec, order = compressed_layout(image_format)
    data = np.frombuffer(data, dtype=np.uint8)
    found = next((name for name, magic in _MAGIC.items() if bytes(data[: len(magic)]) == magic), None)
    if found is None:
        raise ValueError(f"with format {image_format!r} holds neither a JPEG nor a PNG")
    if codec is not None and found != codec:
        raise ValueError(f"with format {image_format!r} holds a {found.upper()}, not a {codec.upper()}")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError(f"with format {image_format!r} could not be decoded (corrupt data)")
    if decoded.dtype != np.uint8:
        raise ValueError(f"with format {image_format!r} decodes to {decoded.dtype}; only 8-bit images are supported")
    if decoded.ndim == 2:
        return decoded[..., None], "mono8"
    if order == "mono8":
        raise ValueError(f"with format {image_format!r} says mono8 but decodes to {decoded.shape[2]} channels")
    return decoded[..., :3], order  # an alpha channel is not observed
