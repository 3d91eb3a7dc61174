"""Image embeddings from an open_clip image tower, with weights from a local file and never a download.

Images are decoded either in DataLoader workers (PIL resize and crop there, uint8 pixels handed over, scaling
and normalisation on the model's device) or, the default on CUDA, on the GPU itself (`index.device_decode`,
nvJPEG), a few batches ahead of the tower, which runs in batches with bf16 autocast on CUDA. Each dataset
shard's embeddings are cached as one Parquet file, tagged with the model's fingerprint, so a killed run
resumes at the first shard without a cache and a different model never reuses another's vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import posixpath
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import numpy as np
import open_clip
import pyarrow as pa
import torch
import torchvision
from PIL import Image

from index import device_decode
from pipelines.formats import atomic_write_table, exists, join, open_parquet

Progress = Callable[[str, int, int], None]

DEMO_MODEL = "webjft-tiny-vit"
"""A small open_clip ViT config (64 px, 4 layers) shipped in index/model_configs, for runs without weights."""

FINGERPRINT_KEY = b"webjft.embedding_model"
CACHE_SCHEMA = pa.schema(
    [pa.field("image_id", pa.string(), False), pa.field("embedding", pa.list_(pa.float32()), False)]
)


def _register_configs() -> None:
    folder = resources.files("index") / "model_configs"
    if DEMO_MODEL not in open_clip.list_models():
        open_clip.add_model_config(str(folder))


@dataclass(frozen=True)
class ModelChoice:
    """Which image tower to run: an open_clip architecture, its weights file (None: random), and why."""

    name: str
    weights: str | None
    reason: str
    seed: int = 0

    @property
    def random(self) -> bool:
        return self.weights is None

    def describe(self) -> str:
        if self.random:
            return (f"open_clip {self.name} with RANDOM weights (seed {self.seed}; {self.reason}): random "
                    "features give weak noise estimates; pass --model and --weights for real ones")
        return f"open_clip {self.name} with weights from {self.weights} ({self.reason})"


def choose_model(model: str | None, weights: str | None, seed: int = 0) -> ModelChoice:
    """The user's model and weights; without weights, the small demo config with random weights."""
    if weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file {weights} not found")
        return ModelChoice(model or "ViT-B-32", os.fspath(weights), "given with --weights", seed)
    if model is not None and model != DEMO_MODEL:
        raise ValueError(f"--model {model} needs --weights PATH (a local weights file; webjft never downloads)")
    return ModelChoice(DEMO_MODEL, None, "no --weights given", seed)


def _check_architecture(name: str) -> None:
    _register_configs()
    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower().split("-")[0] in m.lower()][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown open_clip architecture {name!r}{hint}")


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any loader failure means the file is not usable weights
        raise ValueError(f"weights file {path} could not be read: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_image_tower(choice: ModelChoice, device: str = "cpu") -> tuple[torch.nn.Module, Callable]:
    """The image tower in eval mode on `device` and its eval preprocessing.

    A weights file may hold the whole CLIP model (`visual.*` keys among others) or the image tower alone.
    Anything that does not load strictly into the architecture is a ValueError saying what did not match.
    """
    _check_architecture(choice.name)
    torch.manual_seed(choice.seed)
    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # open_clip warns "no weights"
    try:
        model = open_clip.create_model(choice.name, pretrained=None)
    finally:
        logging.getLogger().disabled = was
    tower = model.visual
    if choice.weights is not None:
        state = _read_state_dict(choice.weights)
        if any(key.startswith("visual.") for key in state):
            state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
        _load_strict(tower, state, choice)
    tower.eval().to(device)
    mean, std = _normalisation(tower)
    return tower, open_clip.image_transform(tower.image_size, is_train=False, mean=mean, std=std)


def _normalisation(tower: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = getattr(tower, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(tower, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return tuple(mean), tuple(std)


def _load_strict(tower: torch.nn.Module, state: dict[str, torch.Tensor], choice: ModelChoice) -> None:
    expected = tower.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} with other shapes (first {k}: file {tuple(state[k].shape)}, "
                         f"{choice.name} {tuple(expected[k].shape)})")
        raise ValueError(f"weights file {choice.weights} does not match open_clip {choice.name}: "
                         + "; ".join(parts))
    tower.load_state_dict(state, strict=True)


def fingerprint(choice: ModelChoice) -> str:
    """Identifies the features: architecture plus the weights' sha256 (or the random seed)."""
    if choice.weights is None:
        return f"{choice.name}:random:{choice.seed}"
    digest = hashlib.sha256()
    with open(choice.weights, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"{choice.name}:sha256:{digest.hexdigest()}"


def pil_steps(preprocess: Callable) -> Callable | None:
    """The part of an open_clip eval transform before its ToTensor (resize, crop, mode), or None when the
    transform has another shape. Workers run only this part and hand over uint8 pixels, a quarter of the
    bytes of float32; the scaling and normalisation run on the model's device."""
    steps = getattr(preprocess, "transforms", None)
    if not steps:
        return None
    names = [type(step).__name__ for step in steps]
    cut = next((i for i, name in enumerate(names) if name in ("ToTensor", "MaybeToTensor")), None)
    if cut is None or names[cut + 1 :] != ["Normalize"]:
        return None
    return torchvision.transforms.Compose(steps[:cut])


class _Decoded(torch.utils.data.Dataset):
    """Encoded images -> uint8 (3, H, W) crops (or, for an unusual transform, its float output); runs in
    DataLoader worker processes."""

    def __init__(self, contents: Sequence[bytes], preprocess: Callable) -> None:
        self.contents, self.preprocess = contents, preprocess
        self.steps = pil_steps(preprocess)

    def __len__(self) -> int:
        return len(self.contents)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(io.BytesIO(self.contents[i])) as image:
            if self.steps is None:
                return self.preprocess(image.convert("RGB"))
            pixels = np.asarray(self.steps(image.convert("RGB")))
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


DECODE_ON = ("auto", "workers", "device")
"""Where images are decoded: PIL in DataLoader worker processes, or nvJPEG on the model's device
(`index.device_decode`). `auto` picks the device on CUDA (5-6x the workers' rate on an H200,
docs/benchmarks.md) and the workers elsewhere."""


@dataclass
class Embedder:
    """A loaded tower plus how to feed it; `embed` turns encoded images into float32 vectors."""

    choice: ModelChoice
    tower: torch.nn.Module
    preprocess: Callable
    device: str
    batch_size: int = 256
    workers: int = 0
    decode_on: str = "workers"
    decode_threads: int = 4

    @classmethod
    def load(cls, choice: ModelChoice, device: str | None = None, batch_size: int = 256,
             workers: int | None = None, decode_on: str = "auto") -> Embedder:
        if decode_on not in DECODE_ON:
            raise ValueError(f"decode_on must be one of {', '.join(DECODE_ON)}, not {decode_on!r}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tower, preprocess = load_image_tower(choice, device)
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        if decode_on == "auto":
            decode_on = "device" if device.startswith("cuda") else "workers"
        return cls(choice, tower, preprocess, device, batch_size, workers, decode_on)

    @property
    def image_size(self) -> int:
        size = self.tower.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @torch.inference_mode()
    def embed(self, contents: Sequence[bytes], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 (len(contents), dim) features of the encoded images, in order."""
        batches = self._device_batches(contents) if self.decode_on == "device" else self._worker_batches(contents)
        cuda = self.device.startswith("cuda")
        # Forward passes on a non-blocking stream of their own, so that nothing the decoder queues on the
        # legacy default stream waits for them (or they for it).
        compute = torch.cuda.Stream(device=self.device) if cuda else None
        out = []
        for batch in batches:
            with torch.cuda.stream(compute) if cuda else contextlib.nullcontext():
                batch = self._on_device(batch, compute)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    out.append(self.tower(batch).float())  # stays on the device: no sync per batch
            if on_batch:
                on_batch(len(batch))
        if cuda:
            torch.cuda.current_stream(self.device).wait_stream(compute)
        dim = self.tower.output_dim if hasattr(self.tower, "output_dim") else 0
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, dim), dtype=np.float32)

    def _worker_batches(self, contents: Sequence[bytes]) -> Iterator[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            _Decoded(contents, self.preprocess), batch_size=self.batch_size, num_workers=self.workers,
            pin_memory=self.device.startswith("cuda"), persistent_workers=False,
        )
        yield from loader

    def _on_device(self, batch: torch.Tensor, stream: torch.cuda.Stream | None) -> torch.Tensor:
        """A batch ready for the tower, on the current stream: workers' CPU pixels are moved and normalised
        here; a batch decoded on the device is only marked as read by this stream."""
        if batch.device.type == "cpu" and self.device != "cpu":
            batch = batch.to(self.device, non_blocking=True)
        elif stream is not None:
            batch.record_stream(stream)
        if batch.dtype == torch.uint8:
            batch = device_decode.normalize(batch, *_normalisation(self.tower))
        return batch

    def _device_batches(self, contents: Sequence[bytes]) -> Iterator[torch.Tensor]:
        """Batches decoded on the device by `decode_threads` threads, each on its own CUDA stream, a few
        batches ahead of the tower's forward passes; yielded in order."""
        mean, std = _normalisation(self.tower)
        cuda = self.device.startswith("cuda")
        streams = threading.local()

        def prepare(start: int) -> torch.Tensor:
            part = contents[start : start + self.batch_size]
            if not cuda:
                return device_decode.preprocess(device_decode.decode(part, self.device), self.image_size, mean, std)
            if not hasattr(streams, "stream"):
                streams.stream = torch.cuda.Stream(device=self.device)
            with torch.cuda.stream(streams.stream):
                images = device_decode.decode(part, self.device)
                batch = device_decode.preprocess(images, self.image_size, mean, std)
            streams.stream.synchronize()
            return batch

        threads = max(1, self.decode_threads)
        with ThreadPoolExecutor(threads, thread_name_prefix="webjft-decode") as pool:
            pending: deque[Future[torch.Tensor]] = deque()
            for start in range(0, len(contents), self.batch_size):
                pending.append(pool.submit(prepare, start))
                if len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def cache_path(cache_dir: str, shard: str) -> str:
    return join(cache_dir, posixpath.basename(shard))


def _cached_rows(path: str, tag: str) -> int | None:
    """Rows of a cache file written for this model, or None when absent or made by another model."""
    if not exists(path):
        return None
    with open_parquet(path) as parquet:
        meta = parquet.schema_arrow.metadata or {}
        if meta.get(FINGERPRINT_KEY) != tag.encode():
            return None
        return parquet.metadata.num_rows


def embed_shards(
    embedder: Embedder,
    shards: Sequence[str],
    cache_dir: str,
    *,
    progress: Progress | None = None,
    total_images: int | None = None,
) -> tuple[list[str], dict[str, float]]:
    """Embed every shard's `content` into `cache_dir/<shard name>` (image_id, embedding); skip shards already
    cached for this model. Returns the cache files in shard order and throughput numbers."""
    tag = fingerprint(embedder.choice)
    done = 0
    embedded = 0
    seconds = 0.0
    files = []
    for shard in shards:
        target = cache_path(cache_dir, shard)
        files.append(target)
        cached = _cached_rows(target, tag)
        with open_parquet(shard) as parquet:
            rows = parquet.metadata.num_rows
            if cached == rows:
                done += rows
                if progress:
                    progress("embed", done, total_images or done)
                continue
            table = parquet.read(columns=["image_id", "content"])
        content = table.column("content")
        if content.null_count:
            first = table.column("image_id").filter(content.is_null())[0].as_py()
            raise ValueError(f"{shard}: {content.null_count:,} images have no content (first {first!r}); "
                             "embed them yourself and pass --embeddings")

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("embed", done, total_images or done)

        start = time.perf_counter()
        vectors = embedder.embed(content.to_pylist(), advance)
        seconds += time.perf_counter() - start
        embedded += len(vectors)
        flat = pa.array(vectors.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
        out = pa.table({"image_id": table.column("image_id"), "embedding": pa.ListArray.from_arrays(offsets, flat)},
                       schema=CACHE_SCHEMA.with_metadata({FINGERPRINT_KEY: tag.encode()}))
        atomic_write_table(out, target)
    rate = embedded / seconds if seconds else 0.0
    return files, {"embedded_images": embedded, "embed_seconds": round(seconds, 3), "images_per_second": rate}
