"""GPU checks of the noise index, prepared to run in under 5 minutes on one lent H100/H200.

1. Embedding throughput: `index.embed.Embedder` on encoded JPEGs (decode + preprocess in DataLoader workers,
   bf16 autocast) against the raw image tower's forward rate on random tensors already on the GPU.
   Goal: >= 80% of the raw rate.
2. One k-means iteration (assign + update, `index.kmeans.lloyd_step`) for N=1M, d=512, K=16384 in fp32, tf32
   and bf16 (bf16 shortlists two centroids, then exact float32 distances decide), over several chunk sizes;
   assignments compared with a float32 reference, mismatches counted only beyond near-ties.
   Goal: <= 0.035 s on an H100/H200.

Random weights throughout (no downloads); faiss-gpu is not installable on the lent machines, so GPU k-means
is the torch path. `--tiny` runs the same code on the CPU with small sizes (what the tests run).

    python bench/gpu_noise.py                 # on the GPU machine, prints a Markdown table
    python bench/gpu_noise.py --tiny          # CPU fallback, seconds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from index.embed import DEMO_MODEL, Embedder, ModelChoice  # noqa: E402
from index.kmeans import lloyd_step  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
    """Distinct smooth-noise JPEGs, so decoding costs what real photos of that size cost."""
    rng = np.random.default_rng(seed)
    base = [rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8) for _ in range(16)]
    out = []
    for i in range(n):
        image = Image.fromarray(base[i % 16]).resize((size, size), Image.BILINEAR).rotate(i % 360)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def bench_embedding(model: str, n_images: int, batch: int, workers: int, device: str, image_px: int) -> dict:
    embedder = Embedder.load(ModelChoice(model, None, "benchmark"), device, batch, workers)
    size = embedder.tower.image_size
    size = size[0] if isinstance(size, tuple) else size
    random = torch.randn(batch, 3, size, size, device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for _ in range(3):
            embedder.tower(random)
        _sync(device)
        steps = max(3, n_images // batch)
        start = time.perf_counter()
        for _ in range(steps):
            embedder.tower(random)
        _sync(device)
        raw = steps * batch / (time.perf_counter() - start)
    contents = _jpegs(n_images, image_px)
    embedder.embed(contents[: batch * 2])  # warm the workers' first import and cuDNN choices
    _sync(device)
    start = time.perf_counter()
    vectors = embedder.embed(contents)
    _sync(device)
    pipeline = len(vectors) / (time.perf_counter() - start)
    return {"model": model, "images": n_images, "batch": batch, "workers": workers, "jpeg_px": image_px,
            "raw_images_per_s": raw, "pipeline_images_per_s": pipeline, "ratio": pipeline / raw}


def bench_kmeans(n: int, d: int, k: int, device: str, chunks: list[int], repeats: int) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    centres = torch.randn(k, d, generator=gen)
    x = (centres[torch.randint(0, k, (n,), generator=gen)] + 0.5 * torch.randn(n, d, generator=gen)).to(device)
    init = x[torch.randperm(n, generator=gen)[:k].to(device)].clone()
    _, reference, ref_dist = lloyd_step(x, init, precision="fp32", chunk_rows=chunks[0])
    rows = []
    for precision in ("fp32", "tf32", "bf16"):
        for chunk in chunks:
            lloyd_step(x, init, precision=precision, chunk_rows=chunk)  # warm-up
            times = []
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                _, labels, _ = lloyd_step(x, init, precision=precision, chunk_rows=chunk)
                _sync(device)
                times.append(time.perf_counter() - start)
            differ = labels != reference
            # A mismatch is a near-tie when the chosen centroid is, in float32, as close as the reference's.
            if differ.any():
                chosen = ((x[differ] - init[labels[differ]]) ** 2).sum(1)
                near_tie = (chosen - ref_dist[differ]).abs() <= 1e-3 * ref_dist[differ].clamp(min=1e-6)
                beyond = int((~near_tie).sum())
            else:
                beyond = 0
            rows.append({"precision": precision, "chunk_rows": chunk, "seconds": float(np.median(times)),
                         "mismatches": int(differ.sum()), "mismatches_beyond_near_ties": beyond})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, small sizes (the tests' path)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny:
        embedding = bench_embedding(DEMO_MODEL, 32, 16, 0, device, 64)
        kmeans_rows = bench_kmeans(1_000, 16, 32, device, [256, 512], 1)
    else:
        torch.backends.cudnn.benchmark = True
        embedding = bench_embedding(args.model, args.images, args.batch, args.workers, device, 256)
        kmeans_rows = bench_kmeans(1_000_000, 512, 16_384, device, [8_192, 16_384, 32_768, 65_536], 5)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    result = {"device": name, "embedding": embedding, "kmeans": kmeans_rows}
    print(f"device: {name}")
    print(f"embedding {embedding['model']}: pipeline {embedding['pipeline_images_per_s']:,.0f} images/s, raw forward "
          f"{embedding['raw_images_per_s']:,.0f} images/s, ratio {embedding['ratio']:.0%} (goal >= 80%)")
    print("| precision | chunk rows | one iteration (s) | assignments differing | beyond near-ties |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in kmeans_rows:
        print(f"| {row['precision']} | {row['chunk_rows']:,} | {row['seconds']:.4f} | {row['mismatches']:,} | "
              f"{row['mismatches_beyond_near_ties']:,} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
