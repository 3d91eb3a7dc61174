"""Write a whole synthetic crawl (DESIGN.md crawl contract) plus the truth only evaluation may read.

Layout of OUT: `images/part-*.parquet`, `signals/part-*.parquet`, `taxonomy.parquet`, `verified.parquet`,
`truth.parquet` (evaluation only) and `synth.json` (the config and the statistics the generator realised).
Everything is written into a hidden temporary folder next to OUT and renamed into place at the end, so a
crawl folder is either complete or absent. Each component draws from its own random stream, keyed by the
seed, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.matching import match_signals
from labeling.taxonomy import Taxonomy, default_taxonomy
from pipelines.formats import schemas, storage
from pipelines.formats.crawl import write_crawl_table
from pipelines.synthetic import signals as src
from pipelines.synthetic.config import SynthConfig
from pipelines.synthetic.images import Renderer, class_looks, render_jpegs
from pipelines.synthetic.labels import Truth, choose_classes, sample_truth

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Fixed stream ids: changing one component's draws never shifts another's.
_STREAMS = {"classes": 1, "truth": 2, "looks": 3, "decoder": 4, "pages": 10, "alt_text": 11,
            "page_title": 12, "surrounding_text": 13, "anchor_text": 14, "query_click": 15,
            "user_feedback": 16, "shuffle": 20, "verified": 21, "images": 30}


@dataclass
class SynthReport:
    path: str
    n_images: int
    n_signals: int
    seconds: float
    stats: dict = field(default_factory=dict)


def _rng(config: SynthConfig, stream: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, _STREAMS[stream], *extra])


def image_ids(n: int) -> pa.Array:
    """Stable ids `im00000000`, …; they carry no information about labels."""
    return pa.array(np.char.add("im", np.char.zfill(np.arange(n).astype(str), 8)), type=pa.string())


def generate_crawl(config: SynthConfig, out: str, taxonomy: Taxonomy | None = None,
                   progress: Progress | None = None, overwrite: bool = False,
                   workers: int | None = None) -> SynthReport:
    """Generate the crawl described by `config` into folder `out`.

    `workers` processes render images (default: one per core); it never changes the output.
    """
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    fs, root = storage.resolve(out)
    if fs.exists(root) and fs.ls(root) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty (pass overwrite to replace it)")
    parent, name = root.rstrip("/").rsplit("/", 1) if "/" in root.rstrip("/") else (".", root)
    staging = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    fs.makedirs(staging, exist_ok=True)
    try:
        taxonomy = taxonomy or default_taxonomy()
        report("classes", 0, 1)
        plan = choose_classes(taxonomy, config, _rng(config, "classes"))
        truth = sample_truth(plan, config, _rng(config, "truth"))
        report("classes", 1, 1)
        ids = image_ids(config.n_images)

        blocks, pages = _signal_blocks(taxonomy, plan, truth, config, report)
        signals = _write_signals(blocks, pages, ids, taxonomy, config, staging, report)
        n_signals = signals.num_rows
        _write_images(taxonomy, plan.main_parent, truth, ids, config, staging, report,
                      workers or os.cpu_count() or 1)
        storage.atomic_write_table(taxonomy.to_table(), f"{staging}/taxonomy.parquet")
        verified = _verified_sample(signals, truth, taxonomy, ids, config, report)
        storage.atomic_write_table(verified, f"{staging}/verified.parquet")
        storage.atomic_write_table(_truth_table(truth, ids), f"{staging}/truth.parquet")
        stats = _stats(blocks, pages, truth, plan.active, verified)
        summary = {"generator": "webjft.synthetic", "config": config.model_dump(mode="json"), "stats": stats}
        storage.atomic_write_bytes(f"{staging}/synth.json",
                                   (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
        if fs.exists(root):
            fs.rm(root, recursive=True)
        fs.mv(staging, root, recursive=True)
    except BaseException:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        raise
    return SynthReport(out, config.n_images, n_signals, time.perf_counter() - started, stats)


def _signal_blocks(taxonomy: Taxonomy, plan, truth: Truth, config: SynthConfig, report: Progress
                   ) -> tuple[list[src.SignalBlock], src.Pages]:
    model = src.SourceModel(taxonomy, plan, truth, config)
    steps = ["pages", "alt_text", "page_title", "surrounding_text", "anchor_text", "query_click",
             "user_feedback"]
    report("signals", 0, len(steps))
    pages = src.build_pages(model, _rng(config, "pages"))
    report("signals", 1, len(steps))
    blocks = []
    for done, step in enumerate(steps[1:], start=2):
        rng = _rng(config, step)
        if step == "page_title":
            blocks.append(src.page_title(pages))
        elif step == "surrounding_text":
            blocks.append(src.surrounding_text(model, pages, rng))
        else:
            blocks.append(getattr(src, step)(model, rng))
        report("signals", done, len(steps))
    return blocks, pages


def _write_signals(blocks: list[src.SignalBlock], pages: src.Pages, ids: pa.Array, taxonomy: Taxonomy,
                   config: SynthConfig, staging: str, report: Progress) -> pa.Table:
    keys = pa.array(taxonomy.to_table().column("key").combine_chunks(), type=pa.string())
    parts = []
    for block in blocks:
        n = len(block)
        page = pa.array(block.page, mask=block.page < 0)
        direct = block.text is None
        parts.append(pa.table({
            "image_id": ids.take(pa.array(block.image)),
            "source": pa.array(np.full(n, block.source, dtype=object), type=pa.string()),
            "text": pa.nulls(n, pa.string()) if direct else block.text,
            "class_key": keys.take(pa.array(block.cls)) if direct else pa.nulls(n, pa.string()),
            "weight": pa.array(block.weight, type=pa.float32()),
            "page_id": pages.page_ids.take(page),
        }, schema=schemas.SIGNALS))
    table = pa.concat_tables(parts)
    table = table.take(pa.array(_rng(config, "shuffle").permutation(len(table))))
    n_parts = max(1, -(-len(table) // config.signals_per_file))
    for part in range(n_parts):
        chunk = table.slice(part * config.signals_per_file, config.signals_per_file)
        write_crawl_table(chunk, staging, "signals", part, n_parts)
        report("write signals", part + 1, n_parts)
    return table


def _write_images(taxonomy: Taxonomy, main_parent: np.ndarray, truth: Truth, ids: pa.Array,
                  config: SynthConfig, staging: str, report: Progress, workers: int) -> None:
    """Render and write image files; parts are independent (own random stream), so they run in parallel."""
    looks = class_looks(main_parent, _rng(config, "looks"))
    n = config.n_images
    n_parts = max(1, -(-n // config.images_per_file))
    jobs = []
    for part in range(n_parts):
        start, stop = part * config.images_per_file, min(n, (part + 1) * config.images_per_file)
        jobs.append((config, part, n_parts, start, truth.slice_images(start, stop), looks,
                     ids.slice(start, stop - start), staging))
    if workers <= 1 or n_parts == 1 or not config.images:
        for done, job in enumerate(jobs, start=1):
            _write_image_part(*job)
            report("images", done, n_parts)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, n_parts), mp_context=context) as pool:
        futures = [pool.submit(_write_image_part, *job) for job in jobs]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            report("images", done, n_parts)


def _write_image_part(config: SynthConfig, part: int, n_parts: int, start: int, truth: Truth,
                      looks: np.ndarray, part_ids: pa.Array, staging: str) -> None:
    rows = np.arange(truth.n_images)
    if config.images:
        renderer = Renderer(config.image_size, _rng(config, "decoder"))
        jpegs = render_jpegs(looks, truth, rows, renderer, config.jpeg_quality, config.image_noise,
                             config.confusion_pull, _rng(config, "images", part))
        content = pa.array(list(jpegs), type=pa.binary())
    else:
        content = pa.nulls(len(rows), pa.binary())
    size = pa.array(np.full(len(rows), config.image_size, dtype=np.int32))
    urls = np.char.add(np.char.add("https://img.synthetic.invalid/",
                                   part_ids.to_numpy(zero_copy_only=False).astype(str)), ".jpg")
    table = pa.table({"image_id": part_ids, "url": pa.array(urls, type=pa.string()), "content": content,
                      "width": size, "height": size}, schema=schemas.IMAGES)
    write_crawl_table(table, staging, "images", part, n_parts)


def _candidate_pairs(signals: pa.Table, taxonomy: Taxonomy, report: Progress) -> np.ndarray:
    """Distinct (image index, class) keys of every candidate the build's own matcher finds.

    The verified sample must be uniform over what a build will score, homonym readings and nested names
    included, or a scorer fitted on it would be biased.
    """
    keys = []
    step = 500_000
    n_steps = max(1, -(-signals.num_rows // step))
    for done, start in enumerate(range(0, signals.num_rows, step), start=1):
        evidence = match_signals(signals.slice(start, step), taxonomy)
        image = pc.cast(pc.utf8_slice_codeunits(evidence.column("image_id"), 2), pa.int64()).to_numpy()
        cls = evidence.column("class_id").to_numpy().astype(np.int64)
        keys.append(np.unique(image * len(taxonomy) + cls))
        report("verified sample", done, n_steps)
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)


def _verified_sample(signals: pa.Table, truth: Truth, taxonomy: Taxonomy, ids: pa.Array, config: SynthConfig,
                     report: Progress) -> pa.Table:
    """A uniform sample of distinct candidate (image, class) pairs, checked against truth."""
    keys = _candidate_pairs(signals, taxonomy, report)
    rng = _rng(config, "verified")
    chosen = np.sort(rng.choice(keys, size=min(config.n_verified, len(keys)), replace=False))
    image, cls = chosen // len(taxonomy), (chosen % len(taxonomy)).astype(np.int32)
    class_keys = pa.array(taxonomy.to_table().column("key").combine_chunks(), type=pa.string())
    return pa.table({
        "image_id": ids.take(pa.array(image)),
        "class_key": class_keys.take(pa.array(cls)),
        "correct": pa.array(truth.contains(image, cls)),
    }, schema=schemas.VERIFIED)


def _truth_table(truth: Truth, ids: pa.Array) -> pa.Table:
    labels = pa.ListArray.from_arrays(pa.array(truth.offsets.astype(np.int32)), pa.array(truth.values))
    return pa.table({"image_id": ids, "labels": labels}, schema=schemas.TRUTH)


def _stats(blocks: list[src.SignalBlock], pages: src.Pages, truth: Truth, active: np.ndarray,
           verified: pa.Table) -> dict:
    """What the generator actually realised, to compare with the parameters."""
    per_source = {}
    for block in blocks:
        named = block.cls >= 0
        if block.source == "user_feedback":
            right = (block.weight > 0) == block.correct
            accuracy = float(right.mean()) if len(block) else None
        else:
            accuracy = float(block.correct[named].mean()) if named.any() else None
        honest = block.cls != -2
        per_source[block.source] = {
            "rows": len(block),
            "accuracy": accuracy,
            "no_class_fraction": float((block.cls[honest] == -1).mean()) if honest.any() else 0.0,
            "spam_rows": int((block.cls == -2).sum()),
        }
    counts = truth.counts()
    return {
        "images": truth.n_images,
        "active_classes": len(active),
        "labelled_classes": int(len(np.unique(truth.values))),
        "labels": int(counts.sum()),
        "labels_per_image": float(counts.mean()),
        "silent_images": int(truth.silent.sum()),
        "pages": len(pages.page_ids),
        "spam_pages": pages.n_spam_pages,
        "sources": per_source,
        "signals": int(sum(len(b) for b in blocks)),
        "verified": verified.num_rows,
        "verified_precision": float(np.mean(verified.column("correct").to_numpy())) if verified.num_rows else None,
    }
