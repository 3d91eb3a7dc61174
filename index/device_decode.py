"""Decode and preprocess a batch of encoded images on the model's device (nvJPEG on CUDA).

On a GPU, PIL decoding and bicubic resizing in DataLoader workers cannot keep up with a small image tower:
a ViT-B/32 forward costs less than decoding a photo on one CPU core. Here JPEGs are decoded in one batched
`torchvision.io.decode_jpeg` call on the device, and the resize, crop and normalisation run there too, as
tensor ops that mirror open_clip's eval transform (shorter side to the model's size with antialiased bicubic,
centre crop, scale to [0, 1], normalise). Other formats (PNG, WebP, ...) are decoded by PIL on the CPU and
join the batch. The pixels differ from PIL's by rounding only (another JPEG IDCT, another bicubic kernel).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as F

JPEG_MAGIC = b"\xff\xd8\xff"


def _pil_rgb(content: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(content)) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def decode(contents: Sequence[bytes], device: str | torch.device) -> list[torch.Tensor]:
    """uint8 RGB (3, H, W) tensors on `device`, in order; JPEGs decoded there in one batched call."""
    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(contents)
    jpegs = [i for i, content in enumerate(contents) if content[:3] == JPEG_MAGIC]
    if jpegs:
        raw = [torch.frombuffer(bytearray(contents[i]), dtype=torch.uint8) for i in jpegs]
        try:
            decoded = torchvision.io.decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(contents[i], device) for i in jpegs]  # one bad or exotic JPEG: go one by one
        for i, image in zip(jpegs, decoded, strict=True):
            out[i] = image
    for i, content in enumerate(contents):
        if out[i] is None:
            out[i] = _pil_rgb(content).to(device)
    return out


def _decode_one(content: bytes, device: torch.device) -> torch.Tensor:
    try:
        return torchvision.io.decode_jpeg(torch.frombuffer(bytearray(content), dtype=torch.uint8),
                                          mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return _pil_rgb(content).to(device)  # CMYK and other JPEGs nvJPEG refuses; PIL names what is wrong


def preprocess(images: Sequence[torch.Tensor], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(n, 3, size, size) float32 batch: shorter side to `size` (bicubic, antialiased), centre crop, normalise.

    Images of the same shape are resized together, so a crawl of uniform thumbnails costs one call.
    """
    if not images:
        raise ValueError("no images to preprocess")
    device = images[0].device
    batch = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    for indices in groups.values():
        stack = torch.stack([images[i] for i in indices]).float()
        resized = F.resize(stack, [size], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        # PIL rounds its bicubic output to 8 bits; doing the same keeps the two paths' inputs alike.
        batch[torch.tensor(indices, device=device)] = F.center_crop(resized, [size, size]).round_().clamp_(0, 255)
    return normalize(batch, mean, std)


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(n, 3, H, W) pixels in 0..255 (uint8 or float) -> float32 scaled to [0, 1] and normalised per channel,
    as ToTensor + Normalize would."""
    scale = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    shift = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - shift) / scale
