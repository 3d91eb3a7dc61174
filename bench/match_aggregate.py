"""Micro-benchmark of build stages 1-3 (validate, match, page sizes, aggregate) in one process, one core.

    .venv/bin/python bench/match_aggregate.py CRAWL [--batch-rows N] [--buckets K] [--repeat R]

Stages 1-2 run per batch of signal rows, as the pipeline's DoFn does, and each batch's evidence is split by
hash(image_id) into buckets (the pipeline's shuffle); stage 3a counts page sizes over all evidence at once,
then per bucket the sizes are joined back and stage 3b aggregates. Prints rows in/out, wall and CPU seconds
and rows per CPU second for each stage (parenthesised stages are stand-ins for pipeline plumbing and are not
counted in the stage 1-3 total), and the process's peak RSS. It measures; it checks nothing.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pyarrow as pa

from labeling.evidence import aggregate, attach_page_images, page_sizes
from labeling.matching import match_signals
from labeling.rejects import split_valid
from pipelines.formats import IdSet, crawl_files, hash_ids, iter_file_batches, read_images, read_taxonomy


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _Timings:
    """Per stage: rows in, rows out, wall and CPU seconds; stages keep their first-seen order.

    CPU seconds are this process's: every stage runs on one thread, so on a busy machine they are the
    better measure of the code's own cost, while wall seconds show what a run really took.
    """

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}
        self.restart()

    def restart(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str, rows_in: int, rows_out: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        entry = self.rows.setdefault(stage, [0, 0, 0.0, 0.0])
        entry[0] += rows_in
        entry[1] += rows_out
        entry[2] += wall - self.wall
        entry[3] += cpu - self.cpu
        self.wall, self.cpu = wall, cpu

    def results(self) -> list[tuple[str, int, int, float, float]]:
        return [(stage, int(a), int(b), w, c) for stage, (a, b, w, c) in self.rows.items()]


def _split_by_image(table: pa.Table, buckets: int) -> list[pa.Table]:
    """The pipeline's shuffle, in one process: rows by hash(image_id) % buckets."""
    if buckets == 1:
        return [table]
    bucket = (hash_ids(table.column("image_id")) % np.uint64(buckets)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
    table = table.take(pa.array(order))
    return [table.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def run(crawl: str, batch_rows: int, buckets: int) -> list[tuple[str, int, int, float, float]]:
    """One pass over the crawl: (stage, rows in, rows out, wall seconds, CPU seconds) per stage."""
    t = _Timings()
    taxonomy = read_taxonomy(crawl)
    ids = IdSet(read_images(crawl, columns=["image_id"]).column("image_id"))
    keys = taxonomy.to_table().column("key").combine_chunks()
    taxonomy.lexicon(), taxonomy.ancestor_pairs(), taxonomy.ids_of(keys[:1])
    t.lap("setup (taxonomy, image ids, lexicon)", 0, len(ids))

    by_bucket: list[list[pa.Table]] = [[] for _ in range(buckets)]
    pages: list[pa.Table] = []
    for path in crawl_files(crawl, "signals"):
        t.restart()
        for first_row, batch in iter_file_batches(path, "signals", batch_rows):
            t.lap("read signals", batch.num_rows, batch.num_rows)
            valid, _ = split_valid(batch, file=path, first_row=first_row, known_image_ids=ids, known_class_keys=keys)
            t.lap("1 split_valid", batch.num_rows, valid.num_rows)
            evidence = match_signals(valid, taxonomy)
            t.lap("2 match_signals", valid.num_rows, evidence.num_rows)
            pages.append(evidence.select(["page_id", "image_id"]))
            for part, rows in zip(by_bucket, _split_by_image(evidence, buckets), strict=True):
                part.append(rows)
            t.lap("(bucket by hash(image_id))", evidence.num_rows, evidence.num_rows)

    t.restart()
    page_rows = pa.concat_tables(pages).combine_chunks()
    pages.clear()
    t.lap("(concat page columns)", page_rows.num_rows, page_rows.num_rows)
    sizes = page_sizes(page_rows)
    t.lap("3a page_sizes", page_rows.num_rows, sizes.num_rows)
    page_rows = None

    while by_bucket:
        t.restart()
        part = pa.concat_tables(by_bucket.pop(0)).combine_chunks()
        t.lap("(concat bucket)", part.num_rows, part.num_rows)
        joined = attach_page_images(part, sizes)
        t.lap("3a attach_page_images", part.num_rows, joined.num_rows)
        features = aggregate(joined, taxonomy)
        t.lap("3b aggregate", joined.num_rows, features.num_rows)
    return t.results()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crawl", help="crawl folder (e.g. from `webjft synth OUT --preset demo --no-images`)")
    parser.add_argument("--batch-rows", type=int, default=200_000, help="signal rows per stage 1-2 batch")
    parser.add_argument("--buckets", type=int, default=1, help="image buckets for stage 3b (1 = all at once)")
    parser.add_argument("--repeat", type=int, default=1, help="passes; every pass is printed (the first is cold)")
    args = parser.parse_args()

    for attempt in range(1, args.repeat + 1):
        results = run(args.crawl, args.batch_rows, args.buckets)
        print(f"pass {attempt}: {args.crawl}, batch rows {args.batch_rows:,}, image buckets {args.buckets}")
        print(f"  {'stage':38} {'rows in':>12} {'rows out':>12} {'wall s':>8} {'cpu s':>8} {'rows in/cpu s':>14}")
        for stage, rows_in, rows_out, wall, cpu in results:
            rate = f"{rows_in / cpu:,.0f}" if rows_in and cpu > 0 else "-"
            print(f"  {stage:38} {rows_in:>12,} {rows_out:>12,} {wall:>8.2f} {cpu:>8.2f} {rate:>14}")
        signals = next(r for r in results if r[0] == "read signals")[1]
        wall = sum(r[3] for r in results if r[0][0] in "123")
        cpu = sum(r[4] for r in results if r[0][0] in "123")
        print(f"  stages 1-3 together: {wall:.2f} s wall, {cpu:.2f} s cpu = {signals / cpu:,.0f} signals per cpu s")
    print(f"peak RSS {_peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    pa.set_cpu_count(1)  # stages run one core per worker in the pipeline; measure the same way
    pa.set_io_thread_count(1)
    main()
