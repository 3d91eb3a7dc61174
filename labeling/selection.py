"""Stage 5: per class, the lowest score threshold whose kept labels reach the target precision.

Scores are calibrated probabilities, so the expected precision of the labels a threshold keeps is their
mean score. Selection only needs, per class, a histogram of scores (counts and score sums in fixed bins):
Beam builds those with a CombineFn and the driver chooses thresholds from them, never touching the
candidates. Where a verified sample exists, a per-class correction (a shift in log-odds, estimated from
the class's verified pairs, or backed off to an ancestor's family of classes, then to all pairs; always
shrunk toward the global shift) accounts for classes the global model under- or over-rates, after each
class's log-odds are spread about its own level (WITHIN_CLASS_SPREAD): within a class the scorer ranks
more sharply than its cross-class calibration says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from labeling.intervals import beta_interval
from labeling.taxonomy import Taxonomy

__all__ = [
    "BINS",
    "MAX_INTERVAL_N",
    "SHIFT_PRIOR_SD",
    "WITHIN_CLASS_SPREAD",
    "ScoreHistogram",
    "bin_edges",
    "bin_index",
    "calibration_shifts",
    "choose_thresholds",
    "class_histograms",
    "select",
]

BINS = 1000
"""Histogram bins over [0, 1]: thresholds are multiples of 1/BINS (as float32)."""
SHIFT_PRIOR_SD = 0.5
"""Prior sd of a class's log-odds correction around the global one: big shifts need many verified pairs."""
WITHIN_CLASS_SPREAD = 1.45
"""Factor on the log-odds of a class's scores, about the class's own level, before they are averaged.

The calibrator is fitted across classes, but selection compares labels within one class, where the
model's log-odds separate right from wrong more sharply: on tuning crawl 0, with a per-class intercept
fitted on the truth, the likelihood wants a slope of ~1.2 and 1.2-1.4 puts the kept labels on target;
without it they beat their mean score by +0.03 at every target (the marginal ones, below the target,
most), even with per-class shifts fitted on the truth. The verified sample is too thin per class to fit
it (it says ~1.0), so it is tuned on seeds 0-9: precision minus target -0.001 on average, 4 of 30 cells
outside +-0.02 (1.0: +0.036 and 27 cells; 1.4: +0.002; 1.5: -0.003). Each class keeps its expected
number of right labels; 1 takes scores as they are. `choose_thresholds` applies it only with verified
pairs, i.e. to the supervised scorer's scores.
"""
MAX_INTERVAL_N = 10_000
"""Effective sample size cap for precision intervals: no interval narrower than about +-0.01 is claimed."""
_CHUNK = 512  # classes per vectorised block (keeps dense blocks at a few MB)


def bin_edges(bins: int = BINS) -> np.ndarray:
    """float32 lower edges of the bins plus 1.0; a score s is in bin b iff edges[b] <= s < edges[b+1]."""
    return (np.arange(bins + 1, dtype=np.float64) / bins).astype(np.float32)


def bin_index(scores: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The bin of each float32 score, consistent with `select`: bin(s) >= b exactly when s >= edges[b]."""
    s = np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)
    edges = bin_edges(bins)
    b = np.clip(np.floor(s.astype(np.float64) * bins).astype(np.int64), 0, bins - 1)
    b -= s < edges[b]
    b = np.maximum(b, 0)
    up = np.minimum(b + 1, bins - 1)
    b += (s >= edges[up]) & (up > b)
    return b


@dataclass(eq=False)
class ScoreHistogram:
    """One class's scores: count and score sum per bin. Mergeable (a Beam CombineFn accumulator)."""

    bins: int = BINS
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    sums: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros(self.bins, dtype=np.int64)
        if self.sums is None:
            self.sums = np.zeros(self.bins, dtype=np.float64)
        if self.counts.shape != (self.bins,) or self.sums.shape != (self.bins,):
            raise ValueError(f"counts and sums must have {self.bins} bins")

    @classmethod
    def of(cls, scores: np.ndarray, bins: int = BINS) -> ScoreHistogram:
        return cls(bins).add(scores)

    def add(self, scores: np.ndarray) -> ScoreHistogram:
        """Add float32 scores in place (scores are clipped to [0, 1]); returns self."""
        s = np.clip(np.asarray(scores, dtype=np.float32).reshape(-1), 0.0, 1.0)
        if s.size:
            b = bin_index(s, self.bins)
            self.counts += np.bincount(b, minlength=self.bins)
            self.sums += np.bincount(b, weights=s.astype(np.float64), minlength=self.bins)
        return self

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """Add another histogram in place (same bins); returns self."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms with {other.bins} and {self.bins} bins")
        self.counts += other.counts
        self.sums += other.sums
        return self

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def class_histograms(scores: np.ndarray, class_ids: np.ndarray, bins: int = BINS) -> dict[int, ScoreHistogram]:
    """Per-class histograms of a whole table of scored candidates in one pass (in-process reselection)."""
    classes, inverse = np.unique(np.asarray(class_ids, dtype=np.int64), return_inverse=True)
    s = np.clip(np.asarray(scores, dtype=np.float32).reshape(-1), 0.0, 1.0)
    cell = inverse.astype(np.int64) * bins + bin_index(s, bins)
    counts = np.bincount(cell, minlength=classes.size * bins).reshape(classes.size, bins)
    sums = np.bincount(cell, weights=s.astype(np.float64), minlength=classes.size * bins).reshape(classes.size, bins)
    return {int(c): ScoreHistogram(bins, counts[i].astype(np.int64), sums[i].copy()) for i, c in enumerate(classes)}


# ------------------------------------------------------------------------------------------ verified shifts


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _spread_offsets(counts: np.ndarray, sums: np.ndarray, spread: float) -> np.ndarray:
    """Per row (class), the u with sum over bins of count * sigmoid(spread * logit(bin mean) + u) = sum.

    Spreading a class's log-odds about this u keeps its expected number of right labels unchanged.
    """
    u = np.zeros(counts.shape[0])
    if spread == 1.0:
        return u
    with np.errstate(invalid="ignore", divide="ignore"):
        z = spread * _logit(np.where(counts > 0, sums / np.maximum(counts, 1), 0.5))
    total = sums.sum(axis=1)
    for _ in range(100):
        p = _sigmoid(z + u[:, None])
        gap = (counts * p).sum(axis=1) - total
        slope = (counts * p * (1 - p)).sum(axis=1)
        # The sum of sigmoids is increasing in u; clipped Newton steps cannot overshoot into its flat tails.
        step = np.clip(gap / np.maximum(slope, 1e-12), -1.0, 1.0)
        u -= step
        if np.abs(step).max(initial=0.0) < 1e-9:
            break
    return u


def _grouped_shift(group: np.ndarray, z: np.ndarray, y: np.ndarray, n_groups: int, mean: np.ndarray,
                   sd: float) -> np.ndarray:
    """Per group, the MAP log-odds shift d: sum log-lik(y | sigmoid(z + d)) with prior N(mean, sd^2)."""
    d = np.array(mean, dtype=np.float64, copy=True)
    for _ in range(50):
        p = _sigmoid(z + d[group])
        grad = np.bincount(group, weights=y - p, minlength=n_groups) - (d - mean) / sd**2
        hess = np.bincount(group, weights=p * (1 - p), minlength=n_groups) + 1 / sd**2
        step = grad / hess
        d += step
        if np.abs(step).max(initial=0) < 1e-10:
            break
    return d


def _parents_csr(taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    parents = taxonomy.to_table().column("parents").combine_chunks()
    offsets = np.asarray(parents.offsets.to_numpy(), dtype=np.int64)
    values = np.asarray(parents.values.to_numpy(), dtype=np.int64)
    return offsets - offsets[0], values[offsets[0]:offsets[-1]] if offsets.size else values


def _step_up(nodes: np.ndarray, tags: np.ndarray, p_off: np.ndarray, p_val: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(parent, tag) for every (node, tag), deduplicated."""
    lens = p_off[nodes + 1] - p_off[nodes]
    total = int(lens.sum())
    if total == 0:
        return nodes[:0], tags[:0]
    before = np.cumsum(lens) - lens
    parents = p_val[np.repeat(p_off[nodes] - before, lens) + np.arange(total)]
    tags = np.repeat(tags, lens)
    width = int(tags.max(initial=0)) + 1
    key = np.unique(parents * width + tags)
    return key // width, key % width


def calibration_shifts(verified: pa.Table | None, taxonomy: Taxonomy, classes: np.ndarray | None = None,
                       min_verified: int = 20, prior_sd: float = SHIFT_PRIOR_SD) -> pa.Table:
    """Per class, the log-odds shift applied to its scores, and which verified pairs it came from.

    `verified` has `class_id`, `score` (out-of-fold calibrated scores of the verified pairs) and
    `correct`. Shifts are *relative*: the scorer's calibrator was fitted on these same pairs, so the
    overall level is its business, and out-of-fold scores are a little noisier than the final scorer's.
    A class with at least `min_verified` pairs gets its own shift (MAP, prior N(global, prior_sd^2)) minus
    the global one fitted on all pairs; otherwise the nearest ancestor whose family (itself and all its
    descendants) has that many pairs lends its family's; otherwise the shift is 0. Returns class_id,
    shift, pool ("none" / "class" / "ancestor" / "global"), pool_class (the lending ancestor, else -1)
    and pool_size (verified pairs behind the shift).
    """
    n = len(taxonomy)
    ids = np.arange(n, dtype=np.int32) if classes is None else np.asarray(classes, dtype=np.int32)
    if verified is None or verified.num_rows == 0:
        return pa.table({
            "class_id": ids, "shift": np.zeros(ids.size), "pool": pa.array(["none"] * ids.size, pa.string()),
            "pool_class": np.full(ids.size, -1, dtype=np.int32), "pool_size": np.zeros(ids.size, np.int64),
        })
    for name in ("class_id", "score", "correct"):
        if name not in verified.column_names:
            raise KeyError(f"verified: missing column {name!r} (need class_id, score, correct)")
    vc = np.asarray(verified.column("class_id").to_numpy(), dtype=np.int64)
    if vc.size and (vc.min() < 0 or vc.max() >= n):
        raise ValueError(f"verified: class_id outside the taxonomy (0..{n - 1})")
    z = _logit(np.asarray(verified.column("score").to_numpy(), dtype=np.float64))
    y = np.asarray(verified.column("correct").to_numpy(zero_copy_only=False), dtype=np.float64)
    # The reference level: all pairs, barely regularised (it only has to stay finite on one-sided samples).
    global_shift = float(_grouped_shift(np.zeros(z.size, np.int64), z, y, 1, np.zeros(1), 10.0)[0])

    own = np.bincount(vc, minlength=n)
    # Families: every verified pair belongs to its class and to all that class's ancestors.
    p_off, p_val = _parents_csr(taxonomy)
    member_node, member_pair = [vc], [np.arange(vc.size, dtype=np.int64)]
    nodes, tags = vc, member_pair[0]
    while nodes.size:
        nodes, tags = _step_up(nodes, tags, p_off, p_val)
        member_node.append(nodes)
        member_pair.append(tags)
    fam_node, fam_pair = np.concatenate(member_node), np.concatenate(member_pair)
    key = np.unique(fam_node * vc.size + fam_pair)
    fam_node, fam_pair = key // vc.size, key % vc.size
    family = np.bincount(fam_node, minlength=n)

    # The lending ancestor: nearest (fewest steps up) with a large enough family; ties to the larger family.
    lender = np.full(ids.size, -1, dtype=np.int64)
    need = np.flatnonzero(own[ids] < min_verified)
    nodes, tags = ids[need].astype(np.int64), need.astype(np.int64)
    while nodes.size:
        nodes, tags = _step_up(nodes, tags, p_off, p_val)
        ok = family[nodes] >= min_verified
        if ok.any():
            cand_tag, cand_node = tags[ok], nodes[ok]
            order = np.lexsort((cand_node, -family[cand_node], cand_tag))
            cand_tag, cand_node = cand_tag[order], cand_node[order]
            first = np.r_[True, cand_tag[1:] != cand_tag[:-1]]
            lender[cand_tag[first]] = cand_node[first]
            done = np.isin(tags, cand_tag[first])
            nodes, tags = nodes[~done], tags[~done]

    shift = np.zeros(ids.size)
    pool = np.full(ids.size, "global", dtype=object)
    pool_class = np.full(ids.size, -1, dtype=np.int32)
    pool_size = np.full(ids.size, vc.size, dtype=np.int64)
    mine = own[ids] >= min_verified
    if mine.any():
        groups, inverse = np.unique(vc, return_inverse=True)
        est = _grouped_shift(inverse, z, y, groups.size, np.full(groups.size, global_shift), prior_sd)
        shift[mine] = est[np.searchsorted(groups, ids[mine])] - global_shift
        pool[mine] = "class"
        pool_size[mine] = own[ids[mine]]
    lent = lender >= 0
    if lent.any():
        lenders = np.unique(lender[lent])
        sel = np.isin(fam_node, lenders)
        g = np.searchsorted(lenders, fam_node[sel])
        est = _grouped_shift(g, z[fam_pair[sel]], y[fam_pair[sel]], lenders.size,
                             np.full(lenders.size, global_shift), prior_sd)
        shift[lent] = est[np.searchsorted(lenders, lender[lent])] - global_shift
        pool[lent] = "ancestor"
        pool_class[lent] = lender[lent]
        pool_size[lent] = family[lender[lent]]
    return pa.table({
        "class_id": ids, "shift": shift, "pool": pa.array(pool.tolist(), pa.string()),
        "pool_class": pool_class, "pool_size": pool_size,
    })


def _pool_scores(verified: pa.Table, taxonomy: Taxonomy, shifts: pa.Table) -> list[np.ndarray]:
    """Per row of `shifts`, the sorted verified scores of its pool (for counting pairs above a threshold)."""
    vc = np.asarray(verified.column("class_id").to_numpy(), dtype=np.int64)
    vs = np.asarray(verified.column("score").to_numpy(), dtype=np.float32)
    all_sorted = np.sort(vs)
    by_class: dict[int, np.ndarray] = {}
    order = np.argsort(vc, kind="stable")
    uniq, starts = np.unique(vc[order], return_index=True)
    for c, chunk in zip(uniq.tolist(), np.split(vs[order], starts[1:]), strict=True):
        by_class[c] = np.sort(chunk)
    family_cache: dict[int, np.ndarray] = {}
    out = []
    pools = shifts.column("pool").to_pylist()
    pool_class = shifts.column("pool_class").to_numpy()
    ids = shifts.column("class_id").to_numpy()
    for i, kind in enumerate(pools):
        if kind == "class":
            out.append(by_class[int(ids[i])])
        elif kind == "ancestor":
            a = int(pool_class[i])
            if a not in family_cache:
                members = np.concatenate([[a], taxonomy.descendants(a)])
                family_cache[a] = np.sort(np.concatenate([by_class.get(int(m), np.zeros(0, np.float32))
                                                          for m in members]))
            out.append(family_cache[a])
        else:
            out.append(all_sorted)
    return out


# ------------------------------------------------------------------------------------------ thresholds


def _as_taxonomy(taxonomy: Taxonomy | pa.Table) -> Taxonomy:
    return taxonomy if isinstance(taxonomy, Taxonomy) else Taxonomy.from_table(taxonomy)


def _corrected_expected(counts: np.ndarray, sums: np.ndarray, shift: np.ndarray, spread: float = 1.0,
                        offset: np.ndarray | None = None) -> np.ndarray:
    """Expected right labels per bin after spreading the class's log-odds (about `offset`, see
    `_spread_offsets`) and its log-odds shift (bin means mapped, times counts)."""
    if spread == 1.0 and not np.any(shift):
        return sums
    offset = np.zeros(counts.shape[0]) if offset is None else offset
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)
    shifted = _sigmoid(spread * _logit(mean) + (offset + shift)[:, None])
    if spread == 1.0:
        return np.where(counts > 0, np.where(shift[:, None] == 0, sums, counts * shifted), 0.0)
    return np.where(counts > 0, counts * shifted, 0.0)


def choose_thresholds(histograms: dict[int, ScoreHistogram], verified: pa.Table | None,
                      taxonomy: Taxonomy | pa.Table, target_precision: float, budget: int | None = None,
                      min_verified: int = 20, level: float = 0.95, spread: float | None = None) -> pa.Table:
    """Per class, the lowest threshold whose kept labels' expected precision stays >= `target_precision`.

    `histograms` maps class_id to the histogram of its candidates' calibrated scores; `verified` (optional:
    class_id, score, correct; use out-of-fold scores) corrects each class's scores as in
    `calibration_shifts`. With `budget`, the `budget` labels most likely right overall are kept at most
    (cuts only ever rise). Returns the CLASSES columns for every taxonomy class, by class_id: threshold
    (+inf when nothing is kept), candidates, selected, precision (expected precision of the kept labels;
    of the best bin when nothing is kept; null without candidates) and a `level` Beta interval whose size
    is the number of verified pairs above the threshold in the class's calibration pool (or, without
    verified data, the number of kept labels: sampling noise only), capped at MAX_INTERVAL_N. Scores are
    first spread within each class by `spread` (see WITHIN_CLASS_SPREAD; 1 takes them as they are), the
    verified scores of a class with them, so its shift is fitted on the scale it is applied to. By default
    WITHIN_CLASS_SPREAD with verified pairs (scores of the supervised scorer, whose calibration it was
    tuned on) and 1 without (the label model, baselines): it was never tuned for those.
    """
    if spread is None:
        spread = WITHIN_CLASS_SPREAD if verified is not None and verified.num_rows else 1.0
    if spread <= 0:
        raise ValueError(f"spread must be > 0, got {spread}")
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    tax = _as_taxonomy(taxonomy)
    n = len(tax)
    ids = np.array(sorted(histograms), dtype=np.int64)
    if ids.size and (ids[0] < 0 or ids[-1] >= n):
        raise ValueError(f"histograms: class_id outside the taxonomy (0..{n - 1})")
    bins = {h.bins for h in histograms.values()} or {BINS}
    if len(bins) != 1:
        raise ValueError(f"histograms use different bin counts: {sorted(bins)}")
    nbins = bins.pop()
    edges = bin_edges(nbins)

    offset = np.zeros(ids.size)
    if spread != 1.0:
        for start in range(0, ids.size, _CHUNK):
            rows = np.arange(start, min(start + _CHUNK, ids.size))
            counts = np.stack([histograms[int(c)].counts for c in ids[rows]]).astype(np.float64)
            sums = np.stack([histograms[int(c)].sums for c in ids[rows]])
            offset[rows] = _spread_offsets(counts, sums, spread)
    shifts = calibration_shifts(_spread_verified(verified, ids, offset, spread), tax, ids, min_verified)
    shift = np.asarray(shifts.column("shift").to_numpy(), dtype=np.float64)

    first = np.full(ids.size, nbins, dtype=np.int64)  # lowest kept bin; nbins = nothing kept
    candidates = np.zeros(ids.size, dtype=np.int64)
    cells: list[tuple[np.ndarray, ...]] = []  # for the budget: (row, bin, count, corrected mean) of kept bins
    for start in range(0, ids.size, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, ids.size))
        counts = np.stack([histograms[int(c)].counts for c in ids[rows]]).astype(np.float64)
        sums = np.stack([histograms[int(c)].sums for c in ids[rows]])
        expected = _corrected_expected(counts, sums, shift[rows], spread, offset[rows])
        cum_n = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
        cum_e = np.cumsum(expected[:, ::-1], axis=1)[:, ::-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = np.where(counts > 0, cum_e >= target_precision * cum_n - 1e-9, True)
        # Keep bin b only if every non-empty bin from b up also passes ("stays" above the target).
        stays = np.cumprod(ok[:, ::-1], axis=1)[:, ::-1].astype(bool) & (cum_n > 0)
        nonempty_kept = stays & (counts > 0)
        has = nonempty_kept.any(axis=1)
        first[rows[has]] = np.argmax(nonempty_kept[has], axis=1)
        candidates[rows] = counts.sum(axis=1).astype(np.int64)
        if budget is not None:
            r, b = np.nonzero(nonempty_kept)
            cells.append((rows[r], b, counts[r, b], expected[r, b] / counts[r, b]))

    if budget is not None and cells:
        first = _apply_budget(first, cells, budget, nbins)

    # Final statistics per class from its kept bins.
    selected = np.zeros(ids.size, dtype=np.int64)
    exp_kept = np.zeros(ids.size)
    best_p = np.full(ids.size, np.nan)
    for start in range(0, ids.size, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, ids.size))
        counts = np.stack([histograms[int(c)].counts for c in ids[rows]]).astype(np.float64)
        sums = np.stack([histograms[int(c)].sums for c in ids[rows]])
        expected = _corrected_expected(counts, sums, shift[rows], spread, offset[rows])
        keep = np.arange(nbins)[None, :] >= first[rows][:, None]
        selected[rows] = (counts * keep).sum(axis=1).astype(np.int64)
        exp_kept[rows] = (expected * keep).sum(axis=1)
        nonempty = counts > 0
        top = nbins - 1 - np.argmax(nonempty[:, ::-1], axis=1)
        any_ = nonempty.any(axis=1)
        best_p[rows[any_]] = expected[any_, top[any_]] / counts[any_, top[any_]]

    threshold = np.where(first < nbins, edges[np.minimum(first, nbins - 1)], np.inf).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(selected > 0, exp_kept / np.maximum(selected, 1), best_p)
    n_eff = _interval_sizes(verified, tax, shifts, threshold, selected, candidates)
    low, high = beta_interval(np.nan_to_num(precision, nan=0.5), n_eff, level)
    return _classes_table(tax, ids, threshold, candidates, selected, precision, low, high)


def _spread_verified(verified: pa.Table | None, ids: np.ndarray, offset: np.ndarray, spread: float
                     ) -> pa.Table | None:
    """The verified pairs with their scores spread like their class's candidates (pairs of a class
    without candidates, which a build does not produce, are left as they are)."""
    if verified is None or verified.num_rows == 0 or spread == 1.0 or "score" not in verified.column_names \
            or "class_id" not in verified.column_names:
        return verified
    vc = np.asarray(verified.column("class_id").to_numpy(), dtype=np.int64)
    score = np.asarray(verified.column("score").to_numpy(), dtype=np.float64)
    pos = np.searchsorted(ids, vc)
    known = pos < ids.size
    known[known] = ids[pos[known]] == vc[known]
    out = score.copy()
    out[known] = _sigmoid(spread * _logit(score[known]) + offset[pos[known]])
    field = verified.schema.field("score")
    return verified.set_column(verified.column_names.index("score"), field, pa.array(out).cast(field.type))


def _apply_budget(first: np.ndarray, cells: list[tuple[np.ndarray, ...]], budget: int, nbins: int) -> np.ndarray:
    """Raise cuts so that at most `budget` labels stay: the kept bins with the highest corrected mean."""
    row, b, count, mean = (np.concatenate(parts) for parts in zip(*cells, strict=True))
    if count.sum() <= budget:
        return first
    order = np.lexsort((row, -b, -mean))  # best first; deterministic ties
    fits = np.cumsum(count[order]) <= budget
    n_keep = int(np.argmin(fits)) if not fits.all() else fits.size
    kept = order[:n_keep]
    new_first = np.full(first.size, nbins, dtype=np.int64)
    np.minimum.at(new_first, row[kept], b[kept])
    return np.maximum(first, new_first)


def _interval_sizes(verified: pa.Table | None, tax: Taxonomy, shifts: pa.Table, threshold: np.ndarray,
                    selected: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    if verified is None or verified.num_rows == 0:
        base = np.where(selected > 0, selected, candidates).astype(np.float64)
        return np.minimum(base, MAX_INTERVAL_N)
    pools = _pool_scores(verified, tax, shifts)
    out = np.empty(threshold.size)
    for i, scores in enumerate(pools):
        above = scores.size - np.searchsorted(scores, threshold[i], side="left") if np.isfinite(threshold[i]) \
            else scores.size
        out[i] = min(float(above), float(selected[i]) if selected[i] > 0 else float(above))
    return np.minimum(out, MAX_INTERVAL_N)


def _classes_table(tax: Taxonomy, ids: np.ndarray, threshold: np.ndarray, candidates: np.ndarray,
                   selected: np.ndarray, precision: np.ndarray, low: np.ndarray, high: np.ndarray) -> pa.Table:
    n = len(tax)
    full_threshold = np.full(n, np.inf, dtype=np.float32)
    full_candidates = np.zeros(n, dtype=np.int64)
    full_selected = np.zeros(n, dtype=np.int64)
    full_p = np.full(n, np.nan, dtype=np.float32)
    full_low = np.full(n, np.nan, dtype=np.float32)
    full_high = np.full(n, np.nan, dtype=np.float32)
    full_threshold[ids] = threshold
    full_candidates[ids] = candidates
    full_selected[ids] = selected
    has = candidates > 0
    full_p[ids[has]] = precision[has]
    full_low[ids[has]] = low[has]
    full_high[ids[has]] = high[has]
    missing = np.isnan(full_p)
    table = tax.to_table()
    return pa.table({
        "class_id": table.column("class_id"),
        "key": table.column("key"),
        "name": table.column("name"),
        "parents": table.column("parents"),
        "threshold": pa.array(full_threshold, pa.float32()),
        "candidates": pa.array(full_candidates, pa.int64()),
        "selected": pa.array(full_selected, pa.int64()),
        "precision": pa.array(full_p, pa.float32(), mask=missing),
        "precision_low": pa.array(full_low, pa.float32(), mask=missing),
        "precision_high": pa.array(full_high, pa.float32(), mask=missing),
    }, schema=_CLASSES_SCHEMA)


_CLASSES_SCHEMA = pa.schema([
    pa.field("class_id", pa.int32(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("parents", pa.list_(pa.int32()), nullable=False),
    pa.field("threshold", pa.float32(), nullable=False),
    pa.field("candidates", pa.int64(), nullable=False),
    pa.field("selected", pa.int64(), nullable=False),
    pa.field("precision", pa.float32()),
    pa.field("precision_low", pa.float32()),
    pa.field("precision_high", pa.float32()),
])
"""`pipelines.formats.schemas.CLASSES` (labeling may not import pipelines); a test keeps them equal."""


def select(scores: np.ndarray, class_ids: np.ndarray, thresholds: np.ndarray | pa.Table) -> np.ndarray:
    """Which candidates are kept: score >= its class's threshold (`thresholds` by class_id, or CLASSES)."""
    if isinstance(thresholds, pa.Table):
        cid = np.asarray(thresholds.column("class_id").to_numpy(), dtype=np.int64)
        dense = np.full(int(cid.max(initial=-1)) + 1, np.inf, dtype=np.float32)
        dense[cid] = thresholds.column("threshold").to_numpy()
        thresholds = dense
    t = np.asarray(thresholds, dtype=np.float32)
    c = np.asarray(class_ids, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() >= t.size):
        raise ValueError(f"class_ids outside the thresholds table (0..{t.size - 1})")
    return np.asarray(scores, dtype=np.float32) >= t[c]
