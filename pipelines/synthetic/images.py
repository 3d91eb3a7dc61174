"""Real JPEGs whose visual similarity follows the taxonomy.

Every class gets a latent "look": its main parent's look shrunk a little plus an offset of its own, so
siblings share everything but one offset and distant classes differ in many. A fixed random linear
read-out turns a look into a smooth background and a striped, tilted object; co-occurring objects are
pasted into a corner. Atypical images drift towards their confuser's look, so visual confusion mirrors label
confusion. Distances between looks survive into pixels (the decoder is linear before the squashing), so
k-means on any reasonable visual embedding has the hierarchy to find.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
from PIL import Image

from pipelines.synthetic.labels import Truth

LATENT_DIM = 32
_LOWRES = 8
_PARENT_SHRINK = 0.9


def class_looks(main_parent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_classes, LATENT_DIM) looks, built top-down along each class's main parent."""
    n = len(main_parent)
    offsets = rng.standard_normal((n, LATENT_DIM)).astype(np.float32)
    looks = offsets.copy()
    depth = np.zeros(n, dtype=np.int64)
    # Depth along main parents; main parents strictly decrease depth, so this settles in max-depth passes.
    for _ in range(n):
        has_parent = main_parent >= 0
        new_depth = np.where(has_parent, depth[np.maximum(main_parent, 0)] + 1, 0)
        if np.array_equal(new_depth, depth):
            break
        depth = new_depth
    for level in range(1, int(depth.max(initial=0)) + 1):
        at = np.flatnonzero(depth == level)
        looks[at] = _PARENT_SHRINK * looks[main_parent[at]] + offsets[at]
    looks /= looks.std(axis=0, keepdims=True) + 1e-6
    return looks


class Renderer:
    """Decodes looks into RGB images of one size: a smooth background and a textured object.

    Everything about the picture (background colours, the object's place, size, tilt, colour and
    stripes) is a fixed random linear read-out of the look, so similar looks give similar pictures.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.background = rng.standard_normal((LATENT_DIM, 3 * _LOWRES * _LOWRES)).astype(np.float32)
        self.background /= np.sqrt(LATENT_DIM)
        self.shape = rng.standard_normal((LATENT_DIM, 12)).astype(np.float32) / float(np.sqrt(LATENT_DIM))
        self.up_full = _interpolation_matrix(size, _LOWRES)
        self.up_half = _interpolation_matrix(size // 2, _LOWRES)

    def _field(self, latents: np.ndarray, up: np.ndarray) -> np.ndarray:
        side = up.shape[0]
        low = (latents @ self.background).reshape(len(latents), 3, _LOWRES, _LOWRES)
        background = 0.6 * np.einsum("ij,ncjk,lk->ncil", up, low, up, optimize=True)
        g = np.tanh(latents @ self.shape)  # 12 shape parameters in (-1, 1)
        coords = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        dx, dy = xx[None] - 0.12 * g[:, 0, None, None], yy[None] - 0.12 * g[:, 1, None, None]
        angle = np.pi * g[:, 2, None, None]
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        ru, rv = 0.28 + 0.1 * g[:, 3, None, None], 0.18 + 0.08 * g[:, 4, None, None]
        mask = 0.5 + 0.5 * np.tanh(6.0 * (1.0 - (u / ru) ** 2 - (v / rv) ** 2))  # a soft-edged ellipse
        freq = 3.0 + 3.0 * g[:, 5, None, None]
        stripes = np.sin(2 * np.pi * freq * u + 3 * g[:, 6, None, None])
        colour = 1.8 * g[:, 7:10, None, None] + 0.9 * g[:, 9:12, None, None] * stripes[:, None]
        return background * (1 - mask[:, None]) + colour * mask[:, None]

    def render(self, latents: np.ndarray, inset_latents: np.ndarray | None = None,
               inset: np.ndarray | None = None) -> np.ndarray:
        """uint8 (n, size, size, 3) images; rows with `inset` get a second object in a corner."""
        field = self._field(latents, self.up_full)
        if inset is not None and inset_latents is not None and inset.any():
            half = self.size // 2
            field[inset, :, half:half * 2, half:half * 2] = self._field(inset_latents[inset], self.up_half)
        pixels = 127.5 * (1.0 + np.tanh(0.8 * field))
        return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)).astype(np.uint8)


def _interpolation_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear upsampling as a matrix, so a whole batch upsamples in one einsum."""
    pos = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    pos = np.clip(pos, 0, in_size - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = pos - lo
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    matrix[np.arange(out_size), lo] += 1 - frac
    matrix[np.arange(out_size), hi] += frac
    return matrix


def image_latents(looks: np.ndarray, truth: Truth, rows: np.ndarray, noise: float, pull: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Each image's look: its main class, pulled towards its confuser by atypicality, plus noise."""
    main, conf, atyp = looks[truth.main[rows]], looks[truth.confuser[rows]], truth.atypicality[rows]
    latents = main + (pull * atyp)[:, None] * (conf - main)
    scale = noise * (0.5 + atyp)[:, None]
    return (latents + scale * rng.standard_normal(latents.shape)).astype(np.float32)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def render_jpegs(looks: np.ndarray, truth: Truth, rows: np.ndarray, renderer: Renderer, quality: int,
                 noise: float, pull: float, rng: np.random.Generator, batch: int = 2048) -> Iterator[bytes]:
    """Encoded JPEGs for the given image rows, in order, rendered in bounded-memory batches."""
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        latents = image_latents(looks, truth, chunk, noise, pull, rng)
        inset = truth.extra_is_cooccurring[chunk]
        inset_latents = looks[np.maximum(truth.extra[chunk], 0)]
        for image in renderer.render(latents, inset_latents, inset):
            yield encode_jpeg(image, quality)
