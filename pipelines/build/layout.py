"""Names of everything a build writes, in one place: the dataset's files and its scratch folder.

Scratch files live under `OUT/.work/` (hidden, so listings and validators skip them) and are deleted
before the manifest is written. Every name is a pure function of bucket or file numbers, so the same
build always writes the same names whatever runner executes it.
"""

from __future__ import annotations

from pipelines.formats import join

WORK = ".work"
CLASSES = "classes.parquet"
VERIFIED_REJECTS = "rejects/verified.parquet"
VERIFIED = "verified.parquet"
"""The verified pairs that were candidates, with their out-of-fold scores (reselect chooses from them)."""
DATASET_ENTRIES = frozenset({"manifest.json", CLASSES, VERIFIED, "candidates", "rejects", "shards", "noise", WORK})
"""Top-level names a dataset folder may hold; a folder holding anything else is not replaced."""


def part(folder: str, index: int, count: int) -> str:
    """`{folder}/part-{index:05d}-of-{count:05d}.parquet`."""
    if not 0 <= index < count <= 99_999:
        raise ValueError(f"part {index} out of range for {count} parts")
    return f"{folder}/part-{index:05d}-of-{count:05d}.parquet"


def candidates(index: int, count: int) -> str:
    return part("candidates", index, count)


def rejects(index: int, count: int) -> str:
    """Rejected rows of the crawl's signal file number `index` (one file per signal file, maybe empty)."""
    return part("rejects", index, count)


def work(out: str, *parts: str) -> str:
    return join(out, WORK, *parts)


def features(out: str, index: int, count: int) -> str:
    """Candidate features of one image bucket (stage 3 output, stage 4 input)."""
    return work(out, part("features", index, count))


def errors(out: str, name: str) -> str:
    """One-line reason a worker could not use an input (`signals-00003`, `images-00001`, ...)."""
    return work(out, "errors", f"{name}.txt")


def image_ids(out: str) -> str:
    """Sorted uint64 hashes of the crawl's image ids, for split_valid's unknown-image test."""
    return work(out, "image_ids.npy")


def histograms(out: str) -> str:
    return work(out, "histograms.parquet")
