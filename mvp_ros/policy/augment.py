"""Image augmentation of camera images: random crop (Robomimic) or random shift (DrQ) in training,
and the deterministic transform that matches it at inference.

Images are uint8 (B, H, W, K), K channels of stacked frames, and are cropped before they become
float (a quarter of the bytes). Every image of the batch gets its own offset, the same for all its
stacked frames; the whole batch is one gather of pixels, with no loop over samples. A shift is a
crop of the image padded by repeating its border, the same as clamping the gathered rows and
columns to the image.
"""
from __future__ import annotations

import torch


def augment_images(images: torch.Tensor, augmentation: str, pixels: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Training: a random window of each image, (B, h, w, K) (h = H - 2 * pixels for a crop, H for a shift)."""
    if augmentation == "none":
        return images
    batch, height, width, channels = images.shape
    device = images.device
    offsets = torch.randint(0, 2 * pixels + 1, (batch, 2), generator=generator, device=device)
    if augmentation == "crop":
        rows = offsets[:, :1] + torch.arange(height - 2 * pixels, device=device)
        columns = offsets[:, 1:] + torch.arange(width - 2 * pixels, device=device)
    else:
        rows = (offsets[:, :1] - pixels + torch.arange(height, device=device)).clamp(0, height - 1)
        columns = (offsets[:, 1:] - pixels + torch.arange(width, device=device)).clamp(0, width - 1)
    # one index_select of whole pixels over the flattened batch: several times faster than indexing
    # (sample, row, column) with three broadcast index tensors
    pixel_index = (torch.arange(batch, device=device)[:, None, None] * height + rows[:, :, None]) * width
    pixel_index = (pixel_index + columns[:, None, :]).flatten()
    windows = images.reshape(batch * height * width, channels).index_select(0, pixel_index)
    return windows.view(batch, rows.shape[1], columns.shape[1], channels)


def inference_images(images: torch.Tensor, augmentation: str, pixels: int) -> torch.Tensor:
    """Inference: the centre window for a crop (a view), the images unchanged otherwise."""
    if augmentation != "crop":
        return images
    return images[:, pixels:images.shape[1] - pixels, pixels:images.shape[2] - pixels]
