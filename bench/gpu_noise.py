"""GPU checks of the noise index, prepared to run in under 5 minutes on one lent H100/H200.

1. Embedding throughput: `index.embed.Embedder` on encoded JPEGs, decoding in DataLoader workers (PIL) and
   on the device (nvJPEG, `index.device_decode`), each against the raw image tower's forward rate on random
   tensors already on the GPU (bf16 autocast throughout); and the forward from uint8 crops decoded
   beforehand (the ceiling of any overlapped decoding). Goal: >= 80% of the raw rate.
2. One k-means iteration (assign + update, `index.kmeans.lloyd_step`) for N=1M, d=512, K=16384: fp32 and tf32
   `addmm` + argmin, bf16 `addmm` + top-2 (unfused), and bf16 through the fused Triton kernel
   (`index.fused_assign`, autotuned, then each tile config by hand); bf16 paths re-rank two candidates in
   float32. Assignments compared with a float32 reference, mismatches counted only beyond near-ties.
   Goal: <= 0.035 s on an H100/H200.
3. The torch k-means on CUDA against faiss-cpu on the same problem (same sample and initial centroids):
   the largest centroid difference and the share of equal assignments.

Random weights throughout (no downloads); faiss-gpu is not installable on the lent machines, so GPU k-means
is the torch path. `--tiny` runs the same code on the CPU with small sizes (what the tests run).

    python bench/gpu_noise.py                 # on the GPU machine, prints Markdown tables
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

from index import fused_assign  # noqa: E402
from index.embed import DEMO_MODEL, Embedder, ModelChoice  # noqa: E402
from index.kmeans import assign, kmeans, lloyd_step  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
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
    embedder = Embedder.load(ModelChoice(model, None, "benchmark"), device, batch, workers, decode_on="workers")
    size = embedder.image_size
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
    contents = jpegs(n_images, image_px)
    result = {"model": model, "images": n_images, "batch": batch, "workers": workers, "jpeg_px": image_px,
              "raw_images_per_s": raw, "pipelines": []}
    for decode_on, threads in (("device", 1), ("device", 4)):  # decoding alone, no forward pass
        embedder.decode_on, embedder.decode_threads = decode_on, threads
        start = time.perf_counter()
        for _batch in embedder._device_batches(contents):
            pass
        _sync(device)
        rate = len(contents) / (time.perf_counter() - start)
        result["pipelines"].append({"decode": f"{decode_on}, {threads} threads, decode only", "images_per_s": rate,
                                    "ratio": rate / raw})
        print(result["pipelines"][-1], flush=True)
    for decode_on, threads in (("workers", 0), ("device", 1), ("device", 4)):
        embedder.decode_on, embedder.decode_threads = decode_on, threads
        embedder.embed(contents[: batch * 2])  # warm: workers' first import, nvJPEG handles, cuDNN choices
        _sync(device)
        start = time.perf_counter()
        vectors = embedder.embed(contents)
        _sync(device)
        rate = len(vectors) / (time.perf_counter() - start)
        name = "workers (uint8 crops)" if decode_on == "workers" else f"device, {threads} decode threads"
        result["pipelines"].append({"decode": name, "images_per_s": rate, "ratio": rate / raw})
        print(result["pipelines"][-1], flush=True)
    rate = _cached_crops_rate(embedder, contents, batch, device)
    result["pipelines"].append({"decode": "cached uint8 crops, forward only", "images_per_s": rate,
                                "ratio": rate / raw})
    print(result["pipelines"][-1], flush=True)
    return result


def _cached_crops_rate(embedder: Embedder, contents: list[bytes], batch: int, device: str) -> float:
    """Images/s when decoding was done beforehand (a per-dataset cache of uint8 crops in pinned host
    memory): copy to the device, normalise, forward. The ceiling of any decoding scheme that overlaps."""
    embedder.decode_on = "workers"
    crops = torch.cat(list(embedder._worker_batches(contents)))
    if device == "cuda":
        crops = crops.pin_memory()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for _ in range(2):  # the first round warms up, the second is timed
            start = time.perf_counter()
            for first in range(0, len(crops), batch):
                embedder.tower(embedder._on_device(crops[first : first + batch], None))
            _sync(device)
    return len(crops) / (time.perf_counter() - start)


def _mismatches(x, init, labels, reference, ref_dist) -> tuple[int, int]:
    """Assignments differing from the float32 reference, and those that are not near-ties (the chosen
    centroid is, in float32, farther than the reference's by more than 1e-3 relative)."""
    differ = labels != reference
    if not differ.any():
        return 0, 0
    chosen = ((x[differ] - init[labels[differ]]) ** 2).sum(1)
    near_tie = (chosen - ref_dist[differ]).abs() <= 1e-3 * ref_dist[differ].clamp(min=1e-6)
    return int(differ.sum()), int((~near_tie).sum())


def _time_step(device: str, repeats: int, step) -> tuple[float, torch.Tensor]:
    step()  # warm-up (and, for the autotuned kernel, the tuning)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        _, labels, _ = step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), labels


def bench_kmeans(n: int, d: int, k: int, device: str, chunks: list[int], fused_chunk: int, repeats: int) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    centres = torch.randn(k, d, generator=gen)
    x = (centres[torch.randint(0, k, (n,), generator=gen)] + 0.5 * torch.randn(n, d, generator=gen)).to(device)
    init = x[torch.randperm(n, generator=gen)[:k].to(device)].clone()
    _, reference, ref_dist = lloyd_step(x, init, precision="fp32", chunk_rows=chunks[0])
    rows = []

    def record(precision: str, kernel: str, chunk: int, step) -> None:
        try:
            seconds, labels = _time_step(device, repeats, step)
        except Exception as error:  # a tile config the card cannot fit (shared memory, registers): say so, go on
            print(f"{precision} {kernel}: {type(error).__name__}: {str(error)[:200]}", flush=True)
            return
        mismatches, beyond = _mismatches(x, init, labels, reference, ref_dist)
        rows.append({"precision": precision, "kernel": kernel, "chunk_rows": chunk, "seconds": seconds,
                     "mismatches": mismatches, "mismatches_beyond_near_ties": beyond})
        print(rows[-1], flush=True)

    for precision in ("fp32", "tf32"):
        for chunk in chunks:
            record(precision, "addmm", chunk,
                   lambda p=precision, c=chunk: lloyd_step(x, init, precision=p, chunk_rows=c))
    if not fused_assign.available(x.device):
        return rows
    record("bf16", "fused, whole step", fused_chunk,
           lambda: lloyd_step(x, init, precision="bf16", chunk_rows=fused_chunk))
    low = init.to(torch.bfloat16) if x.is_cuda else init  # the interpreter (CPU) has no bfloat16
    c_norm = (init * init).sum(1)
    xb = x.to(low.dtype)
    # The parts of the step, each over all rows in one call, autotuned.
    record("bf16", "part: kernel, best two by bf16 (packed keys)", n,
           lambda: (None, fused_assign.nearest_two(xb, low, c_norm)[:, 0], None))
    record("bf16", "part: kernel, best two by bf16 (min+argmin)", n,
           lambda: (None, fused_assign.nearest_two(xb, low, c_norm, packed=False)[:, 0], None))
    record("bf16", "part: kernel with float32 re-rank", n,
           lambda: (None, fused_assign.nearest_exact(x, xb, init, low, c_norm)[0], None))
    best = getattr(getattr(fused_assign, "_nearest_two_tuned", None), "best_config", None)
    if best:
        rows[-1]["kernel"] += f" (autotuned: {best})"
    record("bf16", "part: float32 -> bf16 copy of the rows", n, lambda: (None, reference, x.to(low.dtype)))
    labels = reference

    def update():
        sums = torch.zeros_like(init).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=init.shape[0]).float()
        return sums / counts.clamp(min=1)[:, None], labels, counts.cpu()

    record("bf16", "part: update (index_add_ + bincount + host copy)", n, update)
    return rows


def torch_vs_faiss(n: int, d: int, k: int, niter: int) -> dict:
    """The torch backend on this machine's accelerator against faiss-cpu: same sample, same start."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(k, d))[rng.integers(0, k, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    backend = "torch-cuda" if torch.cuda.is_available() else "torch-cpu"
    ours = kmeans(x, k, niter=niter, backend=backend)
    theirs = kmeans(x, k, niter=niter, backend="faiss-cpu")
    same = float((assign(x, ours.centroids, backend="faiss-cpu")[0]
                  == assign(x, theirs.centroids, backend="faiss-cpu")[0]).mean())
    return {"backend": backend, "n": n, "d": d, "k": k, "niter": niter,
            "max_centroid_diff": float(np.abs(ours.centroids - theirs.centroids).max()),
            "objective_rel_diff": abs(ours.objective[-1] - theirs.objective[-1]) / theirs.objective[-1],
            "same_assignment_share": same}


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
    started = time.perf_counter()
    if args.tiny:
        embedding = bench_embedding(DEMO_MODEL, 32, 16, 0, device, 64)
        kmeans_rows = bench_kmeans(1_000, 16, 32, device, [256, 512], 512, 1)
        agreement = torch_vs_faiss(2_000, 16, 16, 5)
    else:
        torch.backends.cudnn.benchmark = True
        kmeans_rows = bench_kmeans(1_000_000, 512, 16_384, device, [16_384, 65_536], 131_072, 5)
        agreement = torch_vs_faiss(100_000, 64, 256, 10)
        print("torch vs faiss-cpu k-means:", json.dumps(agreement), flush=True)
        embedding = bench_embedding(args.model, args.images, args.batch, args.workers, device, 256)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "embedding": embedding, "kmeans": kmeans_rows,
              "torch_vs_faiss": agreement, "seconds": time.perf_counter() - started}
    print(f"device: {name}, torch {torch.__version__}")
    print(f"embedding {embedding['model']}, raw forward {embedding['raw_images_per_s']:,.0f} images/s (goal >= 80%):")
    for row in embedding["pipelines"]:
        print(f"  decoding in {row['decode']}: {row['images_per_s']:,.0f} images/s, {row['ratio']:.0%}")
    print("| precision | kernel | chunk rows | one iteration (s) | assignments differing | beyond near-ties |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in kmeans_rows:
        print(f"| {row['precision']} | {row['kernel']} | {row['chunk_rows']:,} | {row['seconds']:.4f} | "
              f"{row['mismatches']:,} | {row['mismatches_beyond_near_ties']:,} |")
    print("torch vs faiss-cpu k-means:", json.dumps(agreement))
    print(f"total {result['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
