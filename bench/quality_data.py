"""Candidates, verified rows and truth for quality benchmarks, computed in one process with pyarrow.

Until a built dataset is at hand this runs stages 1-3 of `webjft build` on a crawl's signals exactly as
the Beam build wires them (split_valid -> match_signals -> page_sizes joined back -> aggregate), only
without Beam. `load_candidates` reads a built dataset's `candidates/` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labeling.evidence import FEATURES, aggregate, attach_page_images, page_sizes
from labeling.matching import match_signals
from labeling.rejects import split_valid
from labeling.taxonomy import Taxonomy
from pipelines.formats import read_images, read_signals, read_taxonomy, read_truth, read_verified


@dataclass
class Crawl:
    """What a quality run needs: candidate features, the verified rows among them, and the truth."""

    taxonomy: Taxonomy
    candidates: pa.Table  # image_id, class_id, FEATURES...
    verified_rows: np.ndarray  # row indices into candidates of the verified pairs
    verified_correct: np.ndarray  # bool, aligned with verified_rows
    truth: np.ndarray  # bool per candidate: a true label (evaluation only)
    true_pairs_with_evidence: int  # true (image, class) pairs present among candidates
    true_pairs: int  # all true pairs in truth.parquet
    built_selection: np.ndarray | None = None  # a built dataset's own `selected` flags, when read from one


def candidates_from_signals(crawl: str, taxonomy: Taxonomy) -> pa.Table:
    """Stages 1-3 in one process: the candidate features of every (image, class) the signals name."""
    signals = read_signals(crawl)
    known_images = read_images(crawl, columns=["image_id"]).column("image_id")
    valid, _rejects = split_valid(signals, file="signals", first_row=0, known_image_ids=known_images,
                                  known_class_keys=taxonomy.to_table().column("key"))
    evidence = match_signals(valid, taxonomy)
    return aggregate(attach_page_images(evidence, page_sizes(evidence)), taxonomy)


def load_candidates(dataset: str) -> pa.Table:
    """A built dataset's candidates/ (every Parquet file under it), keeping the key and feature columns."""
    folder = os.path.join(dataset, "candidates")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names if f.endswith(".parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no Parquet files")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    keep = [c for c in ("image_id", "class_id", *FEATURES, "selected") if c in table.column_names]
    return table.select(keep)


def _pair_keys(image_ids: pa.Array, class_ids: np.ndarray, index: pa.Array, n_classes: int) -> np.ndarray:
    """image position (in `index`) * n_classes + class; -1 where the image is unknown."""
    pos = pc.index_in(image_ids, value_set=index).to_numpy(zero_copy_only=False)
    pos = np.where(np.isnan(pos.astype(np.float64)), -1, pos).astype(np.int64)
    return np.where(pos >= 0, pos * n_classes + class_ids.astype(np.int64), -1)


def load_crawl(crawl: str, dataset: str | None = None) -> Crawl:
    """Candidates (from the signals, or from `dataset`'s candidates/), verified rows and truth of a crawl."""
    taxonomy = read_taxonomy(crawl)
    n = len(taxonomy)
    cands = load_candidates(dataset) if dataset else candidates_from_signals(crawl, taxonomy)
    built = None
    if "selected" in cands.column_names:
        built = np.asarray(cands.column("selected").to_numpy(zero_copy_only=False), dtype=bool)
        cands = cands.drop_columns(["selected"])
    truth_table = read_truth(crawl)
    if truth_table is None:
        raise FileNotFoundError(f"{crawl}: no truth.parquet (quality needs a synthetic crawl)")
    index = pa.concat_arrays([truth_table.column("image_id").combine_chunks()])
    cand_ids = cands.column("image_id").combine_chunks()
    cand_key = _pair_keys(cand_ids, cands.column("class_id").to_numpy(), index, n)

    labels = truth_table.column("labels").combine_chunks()
    owner = pc.list_parent_indices(labels).to_numpy().astype(np.int64)
    true_key = np.unique(owner * n + pc.list_flatten(labels).to_numpy().astype(np.int64))
    is_true = np.isin(cand_key, true_key)

    verified = read_verified(crawl)
    if verified is None or verified.num_rows == 0:
        rows, correct = np.zeros(0, np.int64), np.zeros(0, bool)
    else:
        key_to_id = {k: i for i, k in enumerate(taxonomy.keys.tolist())}
        vclass = np.array([key_to_id[k] for k in verified.column("class_key").to_pylist()], dtype=np.int64)
        vkey = _pair_keys(verified.column("image_id").combine_chunks(), vclass, index, n)
        order = np.argsort(cand_key)
        at = np.searchsorted(cand_key[order], vkey)
        at = np.minimum(at, len(order) - 1)
        found = cand_key[order][at] == vkey
        rows = order[at[found]]
        correct = np.asarray(verified.column("correct").to_numpy(zero_copy_only=False), dtype=bool)[found]
    return Crawl(taxonomy, cands, rows, correct, is_true, int(is_true.sum()), int(true_key.size), built)


def uniform_verified(crawl: Crawl, n: int | None = None, seed: int = 0) -> Crawl:
    """The same crawl with its verified sample redrawn uniformly over the *matched* candidates (checked
    against truth), as a reviewer sampling the build's own candidates would; `n` defaults to the crawl's
    sample size. The generator samples its own intended pairs, which never include the other readings
    of homonyms, so its verified.parquet is not a uniform sample of what matching produces."""
    size = min(crawl.verified_rows.size if n is None else n, crawl.candidates.num_rows)
    rows = np.sort(np.random.default_rng([seed, 21]).choice(crawl.candidates.num_rows, size, replace=False))
    return Crawl(crawl.taxonomy, crawl.candidates, rows, crawl.truth[rows], crawl.truth,
                 crawl.true_pairs_with_evidence, crawl.true_pairs, crawl.built_selection)
