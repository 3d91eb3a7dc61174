"""CPU performance of the noise index: k-means through webjft vs FAISS's own, a 1M x 512 input set, and
the CPU's image decoding for the embedder.

    .venv/bin/python bench/noise_perf.py kmeans                 # both rates, measured in one run
    .venv/bin/python bench/noise_perf.py decode                 # PIL decode + eval transform, per core
    .venv/bin/python bench/noise_perf.py make /tmp/noise1m      # labels.parquet + embeddings.parquet, 1M x 512
    /usr/bin/time -v .venv/bin/webjft noise --labels /tmp/noise1m/labels.parquet \
        --embeddings /tmp/noise1m/embeddings.parquet --verified /tmp/noise1m/verified.parquet \
        --taxonomy labeling/data/imagenet21k_taxonomy.parquet --out /tmp/noise1m/out

The 1M set follows the default taxonomy: Zipf class sizes over its classes, about 1.3 labels per image, each
class a Gaussian cluster around a mean that its look-alike shares, 20% of labels flipped (mostly to the
look-alike), and a 30k-label verified sample keyed by the taxonomy's keys.

`decode` times what each DataLoader worker of `webjft noise --decode-on workers` does per image (decode one
JPEG, then the open_clip eval transform up to its uint8 crop), in this process and through DataLoaders of
`--workers` worker processes: how many cores the CPU path needs to keep up with a GPU's forward rate.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faiss  # noqa: E402
from gpu_noise import jpegs  # noqa: E402

from index.embed import ModelChoice, _Decoded, load_image_tower  # noqa: E402
from index.kmeans import kmeans  # noqa: E402
from labeling.taxonomy import default_taxonomy  # noqa: E402


def bench_kmeans(n: int, d: int, k: int, niter: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(k, d)).astype(np.float32)
    x = means[rng.integers(0, k, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    mppc = n // k + 1  # train on every point in both
    rates = {"faiss.Kmeans": [], "webjft kmeans (faiss-cpu)": [], "webjft kmeans (torch-cpu)": []}
    for _ in range(repeats):
        start = time.perf_counter()
        km = faiss.Kmeans(d, k, niter=niter, seed=1, max_points_per_centroid=mppc)
        km.train(x)
        rates["faiss.Kmeans"].append(time.perf_counter() - start)
        start = time.perf_counter()
        kmeans(x, k, niter=niter, seed=1, max_points_per_centroid=mppc, backend="faiss-cpu")
        rates["webjft kmeans (faiss-cpu)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        kmeans(x, k, niter=niter, seed=1, max_points_per_centroid=mppc, backend="torch-cpu")
        rates["webjft kmeans (torch-cpu)"].append(time.perf_counter() - start)
    base = np.median(rates["faiss.Kmeans"])
    print(f"N={n:,} d={d} K={k} niter={niter}, median of {repeats}, faiss threads {faiss.omp_get_max_threads()}")
    print("| implementation | seconds | vectors x iterations / s | vs faiss |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rates.items():
        median = float(np.median(seconds))
        print(f"| {name} | {median:.2f} | {n * niter / median:,.0f} | {base / median:.0%} |")


def make_set(out: str, n: int, d: int, flip: float, n_verified: int, seed: int) -> None:
    os.makedirs(out, exist_ok=True)
    taxonomy = default_taxonomy()
    n_classes = len(taxonomy)
    rng = np.random.default_rng(seed)
    sizes = 1.0 / np.arange(1, n_classes + 1) ** 0.9
    prob = sizes / sizes.sum()
    means = rng.normal(size=(n_classes // 2 + 1, d)).astype(np.float32)
    means = np.repeat(means, 2, axis=0)[:n_classes] + 0.6 * rng.normal(size=(n_classes, d)).astype(np.float32)
    lookalike = np.minimum(np.arange(n_classes) ^ 1, n_classes - 1)
    ids_all = np.array([f"img{i:08d}" for i in range(n)])
    emb_writer = pq.ParquetWriter(os.path.join(out, "embeddings.parquet"),
                                  pa.schema([("image_id", pa.string()), ("embedding", pa.list_(pa.float32()))]),
                                  compression="none")
    label_rows, verified = [], {"image_id": [], "class_key": [], "correct": []}
    chunk = 50_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        true = rng.choice(n_classes, size=m, p=prob)
        x = means[true] + 0.7 * rng.normal(size=(m, d)).astype(np.float32)
        first = true.copy()
        flipped = rng.random(m) < flip
        to_lookalike = rng.random(m) < 0.7
        first[flipped] = np.where(to_lookalike, lookalike[true], rng.integers(0, n_classes, m))[flipped]
        extra = rng.random(m) < 0.3
        lists = [[int(a), int(b)] if e and a != b else [int(a)]
                 for a, b, e in zip(first, rng.choice(n_classes, size=m, p=prob), extra, strict=True)]
        ids = ids_all[start : start + m]
        label_rows.append(pa.table({"image_id": pa.array(ids), "labels": pa.array(lists, pa.list_(pa.int32()))}))
        offsets = pa.array(np.arange(0, m * d + 1, d, dtype=np.int32))
        emb_writer.write_table(pa.table({"image_id": pa.array(ids), "embedding": pa.ListArray.from_arrays(
            offsets, pa.array(x.reshape(-1)))}))
        pick = np.flatnonzero(rng.random(m) < n_verified / n)
        verified["image_id"] += ids[pick].tolist()
        verified["class_key"] += [str(taxonomy.keys[first[i]]) for i in pick]
        verified["correct"] += (first[pick] == true[pick]).tolist()
    emb_writer.close()
    pq.write_table(pa.concat_tables(label_rows), os.path.join(out, "labels.parquet"))
    pq.write_table(pa.table(verified), os.path.join(out, "verified.parquet"))
    print(f"wrote {n:,} x {d} embeddings, labels and {len(verified['image_id']):,} verified rows to {out}")


def bench_decode(model: str, n: int, image_px: int, workers: list[int], batch: int) -> dict[str, float]:
    """Images/s of decoding alone, of decode + transform in one process, and through DataLoaders."""
    import torch
    from PIL import Image

    contents = jpegs(n, image_px)
    _, preprocess = load_image_tower(ModelChoice(model, None, "benchmark"), "cpu")
    dataset = _Decoded(contents, preprocess)
    rates: dict[str, float] = {}
    start = time.perf_counter()
    for content in contents:
        with Image.open(io.BytesIO(content)) as image:
            image.convert("RGB").load()
    rates["decode only, 1 process"] = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    rates["decode + transform, 1 process"] = n / (time.perf_counter() - start)
    for count in workers:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=count)
        start = time.perf_counter()
        seen = sum(len(b) for b in loader)
        rates[f"decode + transform, DataLoader, {count} workers"] = seen / (time.perf_counter() - start)
    one = rates["decode + transform, 1 process"]
    print(f"{model} eval transform, {n:,} JPEGs of {image_px} px")
    for name, rate in rates.items():
        print(f"  {name}: {rate:,.0f} images/s ({rate / one:.2f}x one process)")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kmeans")
    k.add_argument("--n", type=int, default=100_000)
    k.add_argument("--d", type=int, default=256)
    k.add_argument("--k", type=int, default=512)
    k.add_argument("--niter", type=int, default=10)
    k.add_argument("--repeats", type=int, default=3)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--n", type=int, default=1_000_000)
    m.add_argument("--d", type=int, default=512)
    m.add_argument("--flip", type=float, default=0.2)
    m.add_argument("--verified", type=int, default=30_000)
    m.add_argument("--seed", type=int, default=0)
    dec = sub.add_parser("decode")
    dec.add_argument("--model", default="ViT-B-32")
    dec.add_argument("--n", type=int, default=2048)
    dec.add_argument("--image-px", type=int, default=256)
    dec.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                     help="DataLoader worker counts to time")
    dec.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if args.what == "kmeans":
        bench_kmeans(args.n, args.d, args.k, args.niter, args.repeats)
    elif args.what == "decode":
        bench_decode(args.model, args.n, args.image_px, args.workers, args.batch)
    else:
        make_set(args.out, args.n, args.d, args.flip, args.verified, args.seed)


if __name__ == "__main__":
    main()
