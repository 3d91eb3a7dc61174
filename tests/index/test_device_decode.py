"""Batched decode + preprocessing on the model's device: same pixels as open_clip's PIL transform, up to rounding.

Run on the CPU here (torchvision decodes JPEGs there with the same call); bench/gpu_noise.py runs it on CUDA.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from index import device_decode
from index.embed import DEMO_MODEL, Embedder, ModelChoice, load_image_tower, pil_steps


def encoded(width: int, height: int, fmt: str, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


CONTENTS = [
    encoded(300, 200, "JPEG", 0),
    encoded(64, 64, "JPEG", 1),
    encoded(64, 64, "PNG", 2),
    encoded(120, 333, "JPEG", 3, mode="L"),
    encoded(64, 64, "JPEG", 4),
]


def test_decode_gives_rgb_uint8_in_order_for_jpeg_png_and_grey():
    images = device_decode.decode(CONTENTS, "cpu")
    assert [tuple(i.shape) for i in images] == [(3, 200, 300), (3, 64, 64), (3, 64, 64), (3, 333, 120), (3, 64, 64)]
    assert all(i.dtype == torch.uint8 for i in images)
    with Image.open(io.BytesIO(CONTENTS[2])) as png:  # PNG is lossless: exact pixels
        assert torch.equal(images[2], torch.from_numpy(np.asarray(png.convert("RGB")).copy()).permute(2, 0, 1))


def test_a_broken_file_names_itself():
    with pytest.raises(Exception, match="cannot identify image file"):
        device_decode.decode([CONTENTS[0], b"not an image"], "cpu")


@pytest.mark.parametrize("model", ["ViT-S-32-alt", DEMO_MODEL])
def test_preprocess_matches_open_clips_pil_transform(model):
    tower, pil_transform = load_image_tower(ModelChoice(model, None, "test"))
    size = tower.image_size[0] if isinstance(tower.image_size, tuple) else tower.image_size
    mean = tower.image_mean or (0.48145466, 0.4578275, 0.40821073)
    std = tower.image_std or (0.26862954, 0.26130258, 0.27577711)
    got = device_decode.preprocess(device_decode.decode(CONTENTS, "cpu"), size, mean, std)
    reference = torch.stack([pil_transform(Image.open(io.BytesIO(c))) for c in CONTENTS])
    assert got.shape == reference.shape == (len(CONTENTS), 3, size, size)
    # Normalised units (1/255 of a pixel is ~0.015): JPEG IDCT and bicubic kernels differ by rounding only.
    assert float((got - reference).abs().mean()) < 0.01
    assert float((got - reference).abs().max()) < 0.1


def test_embedder_decoding_on_the_device_agrees_with_workers():
    choice = ModelChoice(DEMO_MODEL, None, "test")
    other = Embedder.load(choice, "cpu", batch_size=2, workers=0, decode_on="device")
    in_workers = Embedder.load(choice, "cpu", batch_size=2, workers=0, decode_on="workers")
    assert Embedder.load(choice, "cpu").decode_on == "workers"  # auto: workers off CUDA
    a, b = other.embed(CONTENTS), in_workers.embed(CONTENTS)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert a.shape == b.shape == (len(CONTENTS), 128) and cosine.min() > 0.999
    with pytest.raises(ValueError, match="decode_on"):
        Embedder.load(choice, "cpu", decode_on="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a lent GPU machine)")
def test_nvjpeg_on_cuda_matches_the_cpu_path():
    on_cpu = device_decode.decode(CONTENTS, "cpu")
    on_gpu = device_decode.decode(CONTENTS, "cuda")
    assert all(g.is_cuda and g.shape == c.shape for g, c in zip(on_gpu, on_cpu, strict=True))
    # nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's: ~5 levels on average (H200), more at edges.
    assert max(float((g.cpu().float() - c.float()).abs().mean()) for g, c in zip(on_gpu, on_cpu, strict=True)) <= 8
    choice = ModelChoice(DEMO_MODEL, None, "test")
    b = Embedder.load(choice, "cuda", batch_size=2, workers=0, decode_on="workers").embed(CONTENTS)
    a = Embedder.load(choice, "cuda", batch_size=2, decode_on="device").embed(CONTENTS)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99, cosine


def test_workers_hand_over_uint8_crops_that_normalise_to_open_clips_tensors():
    tower, pil_transform = load_image_tower(ModelChoice("ViT-S-32-alt", None, "test"))
    steps = pil_steps(pil_transform)
    assert steps is not None
    with Image.open(io.BytesIO(CONTENTS[0])) as image:
        pixels = torch.from_numpy(np.asarray(steps(image.convert("RGB"))).copy()).permute(2, 0, 1)
        reference = pil_transform(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    mean = tower.image_mean or (0.48145466, 0.4578275, 0.40821073)
    std = tower.image_std or (0.26862954, 0.26130258, 0.27577711)
    torch.testing.assert_close(device_decode.normalize(pixels[None], mean, std)[0], reference, atol=1e-5, rtol=1e-5)
    assert pil_steps(lambda image: image) is None  # not an open_clip Compose: workers run it whole
