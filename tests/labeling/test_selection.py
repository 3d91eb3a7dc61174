import math
import pickle

import numpy as np
import pyarrow as pa
import pytest

from labeling.intervals import beta_interval, beta_ppf
from labeling.selection import (
    BINS,
    WITHIN_CLASS_SPREAD,
    ScoreHistogram,
    _spread_offsets,
    _spread_verified,
    bin_edges,
    bin_index,
    calibration_shifts,
    choose_thresholds,
    select,
)
from labeling.taxonomy import TAXONOMY_SCHEMA, Taxonomy


def taxonomy(parents: list[list[int]]) -> Taxonomy:
    n = len(parents)
    return Taxonomy.from_table(pa.table({
        "class_id": pa.array(range(n), pa.int32()),
        "key": [f"k{i}" for i in range(n)],
        "name": [f"class {i}" for i in range(n)],
        "synonyms": [[] for _ in range(n)],
        "parents": parents,
    }, schema=TAXONOMY_SCHEMA))


# 0 root; 1, 2 children of 0; 3 child of 1; 4 a second root with no candidates.
TAX = taxonomy([[], [0], [0], [1], []])


def hist(*scores: float) -> ScoreHistogram:
    return ScoreHistogram.of(np.array(scores, dtype=np.float32))


def row(table: pa.Table, cid: int) -> dict:
    return table.slice(cid, 1).to_pylist()[0]


def test_histogram_add_merge_pickle() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(1000).astype(np.float32), rng.random(500).astype(np.float32)
    merged = ScoreHistogram.of(a).merge(ScoreHistogram.of(b))
    whole = ScoreHistogram.of(np.concatenate([a, b]))
    assert np.array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.sums, whole.sums)
    assert merged.total == 1500 and merged.bins == BINS
    back = pickle.loads(pickle.dumps(merged))
    assert np.array_equal(back.counts, merged.counts)
    with pytest.raises(ValueError):
        merged.merge(ScoreHistogram(bins=10))


def test_bin_index_agrees_with_threshold_comparison() -> None:
    edges = bin_edges()
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.random(20_000).astype(np.float32), edges, np.nextafter(edges, np.float32(0))])
    b = bin_index(s)
    assert np.all(s >= edges[b])
    assert np.all((s < edges[np.minimum(b + 1, BINS)]) | (b == BINS - 1))
    for k in (0, 1, 550, 999):
        assert np.array_equal(b >= k, s >= edges[k])


def test_threshold_hand_case() -> None:
    # Class 1: four at .95, two at .55, four at .15.
    # Keep 4: .95; keep 6: (3.8 + 1.1) / 6 = .8167 >= .8; keep 10: 5.5 / 10 = .55 < .8 -> cut at .55.
    h = {1: hist(*[0.95] * 4, 0.55, 0.55, *[0.15] * 4), 2: hist(0.3, 0.3, 0.3)}
    table = choose_thresholds(h, None, TAX, 0.8)
    one = row(table, 1)
    assert one["threshold"] == np.float32(0.55)
    assert (one["candidates"], one["selected"]) == (10, 6)
    assert one["precision"] == pytest.approx(4.9 / 6, abs=1e-6)
    assert one["precision_low"] < one["precision"] < one["precision_high"]
    # At .9 only the top four stay.
    assert row(choose_thresholds(h, None, TAX, 0.9), 1)["threshold"] == np.float32(0.95)
    # Class 2 cannot reach .8: nothing kept; precision is what its best bin could give.
    two = row(table, 2)
    assert math.isinf(two["threshold"]) and two["selected"] == 0 and two["candidates"] == 3
    assert two["precision"] == pytest.approx(0.3, abs=1e-6)
    # Classes without candidates: +inf, 0 / 0, null precision.
    four = row(table, 4)
    assert math.isinf(four["threshold"]) and (four["candidates"], four["selected"]) == (0, 0)
    assert four["precision"] is None and four["precision_low"] is None
    assert table.column("class_id").to_pylist() == [0, 1, 2, 3, 4]


def test_classes_schema_matches_dataset_contract() -> None:
    from pipelines.formats.schemas import CLASSES

    table = choose_thresholds({1: hist(0.9)}, None, TAX, 0.8)
    assert table.schema.equals(CLASSES)


def random_histograms(seed: int, n_classes: int) -> dict[int, ScoreHistogram]:
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(n_classes):
        n = int(rng.integers(1, 400))
        out[c] = ScoreHistogram.of(rng.beta(rng.uniform(0.3, 3), rng.uniform(0.3, 3), n).astype(np.float32))
    return out


def spread_expected(h: ScoreHistogram, spread: float) -> np.ndarray:
    """Expected right labels per bin after spreading the class's log-odds, by bisection on its offset."""
    n = h.counts.astype(np.float64)
    with np.errstate(divide="ignore"):  # empty bins: their log-odds are masked out below
        z = np.where(n > 0, np.log(h.sums / np.maximum(n, 1)) - np.log1p(-h.sums / np.maximum(n, 1)), 0.0)
    lo, hi = -50.0, 50.0
    for _ in range(200):
        u = 0.5 * (lo + hi)
        if np.sum(n / (1 + np.exp(-(spread * z + u)))) > h.sums.sum():
            hi = u
        else:
            lo = u
    return n / (1 + np.exp(-(spread * z + 0.5 * (lo + hi))))


@pytest.mark.parametrize("spread", [1.0, WITHIN_CLASS_SPREAD])
@pytest.mark.parametrize("target", [0.6, 0.8, 0.95])
def test_kept_labels_reach_target_and_cut_is_lowest(target: float, spread: float) -> None:
    tax = taxonomy([[] for _ in range(60)])
    hists = random_histograms(2, 60)
    table = choose_thresholds(hists, None, tax, target, spread=spread)
    for cid, h in hists.items():
        r = row(table, cid)
        nonempty = np.flatnonzero(h.counts)
        expected = h.sums if spread == 1.0 else spread_expected(h, spread)
        assert expected.sum() == pytest.approx(h.sums.sum(), rel=1e-6)  # the class's total is kept
        if r["selected"]:
            b = int(bin_index(np.array([r["threshold"]], np.float32))[0])
            kept_mean = expected[b:].sum() / h.counts[b:].sum()
            assert kept_mean >= target - 1e-6
            assert r["precision"] == pytest.approx(kept_mean, abs=1e-5)
            lower = nonempty[nonempty < b]
            if lower.size:  # one more bin would break the target
                nb = lower[-1]
                assert expected[nb:].sum() / h.counts[nb:].sum() < target
        else:
            top = nonempty[-1]
            assert expected[top] / h.counts[top] < target


def test_spread_keeps_more_where_the_top_is_confident() -> None:
    # Spreading a class's log-odds at a fixed total raises its confident labels and lowers its weak ones,
    # so the middle (.45 here) can ride on a confident top: kept mean (19 + 4.5) / 30 = .783 < .8 unspread.
    h = {1: hist(*[0.95] * 20, *[0.45] * 10, *[0.1] * 20)}
    plain = row(choose_thresholds(h, None, TAX, 0.8, spread=1.0), 1)
    spread = row(choose_thresholds(h, None, TAX, 0.8, spread=1.4), 1)
    assert (plain["selected"], spread["selected"]) == (20, 30)
    assert plain["precision"] == pytest.approx(0.95, abs=1e-6) and 0.8 <= spread["precision"] < 0.95
    with pytest.raises(ValueError, match="spread"):
        choose_thresholds(h, None, TAX, 0.8, spread=0.0)


def test_spread_by_default_only_with_verified_pairs() -> None:
    # Verified pairs mean the supervised scorer's scores (what the spread was tuned on); without them
    # (label model, baselines) scores are taken as they are.
    h = {1: hist(*[0.95] * 20, *[0.45] * 10, *[0.1] * 20), 2: hist(*np.linspace(0.3, 0.99, 40))}
    assert choose_thresholds(h, None, TAX, 0.8).equals(choose_thresholds(h, None, TAX, 0.8, spread=1.0))
    pairs = verified([(1, 0.9, True), (1, 0.2, False), (2, 0.7, True), (2, 0.4, False)] * 10)
    default = choose_thresholds(h, pairs, TAX, 0.8)
    assert default.equals(choose_thresholds(h, pairs, TAX, 0.8, spread=WITHIN_CLASS_SPREAD))
    assert not default.equals(choose_thresholds(h, pairs, TAX, 0.8, spread=1.0))


def test_verified_scores_are_spread_with_their_class() -> None:
    # A class whose scores sit at .2 and .8 (total 1.0 over two): spreading by 2 keeps the total, so by
    # symmetry its offset is 0 and .8 -> sigmoid(2 logit .8) = 16 / 17. Pairs of a class without candidates
    # (class 3) keep their scores; the score column keeps its type.
    counts = np.zeros((1, BINS))
    sums = np.zeros((1, BINS))
    for p in (0.2, 0.8):
        b = int(bin_index(np.array([p], np.float32))[0])
        counts[0, b], sums[0, b] = 1, p
    u = _spread_offsets(counts, sums, 2.0)
    assert u[0] == pytest.approx(0.0, abs=1e-6)
    pairs = verified([(2, 0.8, True), (2, 0.2, False), (3, 0.8, True)])
    out = _spread_verified(pairs, np.array([2]), u, 2.0)
    assert out.schema.equals(pairs.schema)
    assert out.column("score").to_numpy() == pytest.approx([16 / 17, 1 / 17, 0.8], abs=1e-6)
    assert _spread_verified(pairs, np.array([2]), u, 1.0) is pairs


def test_budget_keeps_the_best_labels_overall() -> None:
    tax = taxonomy([[] for _ in range(30)])
    hists = random_histograms(3, 30)
    free = choose_thresholds(hists, None, tax, 0.7)
    total = int(pc_sum(free, "selected"))
    budget = total // 3
    capped = choose_thresholds(hists, None, tax, 0.7, budget=budget)
    assert 0 < pc_sum(capped, "selected") <= budget
    t_free, t_cap = free.column("threshold").to_numpy(), capped.column("threshold").to_numpy()
    assert np.all(t_cap >= t_free)  # cuts only rise
    # The cut is global: every kept bin scores above every bin dropped for the budget.
    kept, dropped = [], []
    for c, h in hists.items():
        b = bin_index(np.array([t_cap[c], t_free[c]], np.float32)) if np.isfinite(t_free[c]) else None
        if b is None:
            continue
        means = h.sums / np.maximum(h.counts, 1)
        bins = np.flatnonzero(h.counts)
        kept += means[bins[bins >= b[0]]].tolist() if np.isfinite(t_cap[c]) else []
        dropped += means[bins[(bins >= b[1]) & ((bins < b[0]) | ~np.isfinite(t_cap[c]))]].tolist()
    assert kept and dropped and min(kept) >= max(dropped)
    big = choose_thresholds(hists, None, tax, 0.7, budget=10 * total)
    assert big.equals(free)
    assert pc_sum(choose_thresholds(hists, None, tax, 0.7, budget=0), "selected") == 0


def pc_sum(table: pa.Table, name: str) -> int:
    return int(np.sum(table.column(name).to_numpy()))


def verified(pairs: list[tuple[int, float, bool]]) -> pa.Table:
    c, s, y = zip(*pairs, strict=True)
    return pa.table({"class_id": pa.array(c, pa.int32()), "score": pa.array(s, pa.float32()),
                     "correct": pa.array(y)})


def test_backoff_to_ancestor_then_global() -> None:
    # Class 2 has 30 pairs of its own; class 3 (under 1) has 3, its parent's family (1, 3) has 3 + 2 = 5,
    # the root's family has 35: class 3 and class 1 back off to the root's family. Class 4 (another root,
    # no family) uses the global shift.
    pairs = [(2, 0.5, True)] * 24 + [(2, 0.5, False)] * 6 + [(3, 0.5, True)] * 3 + [(1, 0.5, False)] * 2
    shifts = calibration_shifts(verified(pairs), TAX, np.array([1, 2, 3, 4]), min_verified=20)
    got = {r["class_id"]: r for r in shifts.to_pylist()}
    assert got[2]["pool"] == "class" and got[2]["pool_size"] == 30
    assert got[3]["pool"] == "ancestor" and got[3]["pool_class"] == 0 and got[3]["pool_size"] == 35
    assert got[1]["pool"] == "ancestor" and got[1]["pool_class"] == 0
    assert got[4]["pool"] == "global"
    # Scores of .5 right 27 times in 35: underrated overall (the scorer's business: the global pool gets
    # no shift); class 2 (24 in 30) a little more than the rest, class 1's family (3 in 5) less.
    assert got[4]["shift"] == 0
    assert 0 < got[2]["shift"] < math.log(4) - math.log(27 / 8)
    assert got[3]["shift"] == got[1]["shift"] == pytest.approx(0, abs=0.01)  # root family = all pairs


def test_verified_shift_moves_the_cut() -> None:
    h = {2: hist(*np.linspace(0.5, 0.99, 50))}
    plain = row(choose_thresholds(h, None, TAX, 0.85), 2)
    # Verified pairs of class 2 say its scores are too low: more labels pass.
    up = verified([(2, 0.6, True)] * 40 + [(1, 0.6, False)] * 40)  # class 2 beats the others
    boosted = row(choose_thresholds(h, up, TAX, 0.85), 2)
    assert boosted["threshold"] < plain["threshold"] and boosted["selected"] > plain["selected"]
    down = verified([(2, 0.9, False)] * 40 + [(1, 0.9, True)] * 40)
    cut = row(choose_thresholds(h, down, TAX, 0.85), 2)
    assert cut["selected"] < plain["selected"]
    # Intervals come from the verified pairs above the cut: few pairs, wide interval.
    assert boosted["precision_high"] - boosted["precision_low"] > 0.05


def test_deterministic_and_select() -> None:
    hists = random_histograms(4, 5)
    a = choose_thresholds(hists, None, TAX, 0.75, budget=300)
    b = choose_thresholds({k: hists[k] for k in reversed(list(hists))}, None, TAX, 0.75, budget=300)
    assert a.equals(b)
    scores = np.array([0.2, 0.9, 0.55, 0.549], np.float32)
    classes = np.array([1, 1, 1, 4])
    dense = np.array([np.inf, 0.55, np.inf, np.inf, np.inf], np.float32)
    assert select(scores, classes, dense).tolist() == [False, True, True, False]
    table = choose_thresholds({1: hist(0.9, 0.55, 0.2)}, None, TAX, 0.7)
    assert select(scores, classes, table).tolist() == [False, True, True, False]
    with pytest.raises(ValueError):
        select(scores, np.array([9, 1, 1, 1]), dense)


def test_input_errors() -> None:
    with pytest.raises(ValueError):
        choose_thresholds({}, None, TAX, 1.5)
    with pytest.raises(ValueError):
        choose_thresholds({7: hist(0.5)}, None, TAX, 0.8)
    empty = choose_thresholds({}, None, TAX.to_table(), 0.8)  # a taxonomy table works too
    assert empty.num_rows == 5 and pc_sum(empty, "candidates") == 0


def test_beta_quantiles() -> None:
    q = np.array([0.025, 0.5, 0.975])
    np.testing.assert_allclose(beta_ppf(q, 1.0, 1.0), q, atol=1e-9)  # uniform
    np.testing.assert_allclose(beta_ppf(q, 2.0, 1.0), np.sqrt(q), atol=1e-9)  # cdf x^2
    np.testing.assert_allclose(beta_ppf(q, 1.0, 3.0), 1 - (1 - q) ** (1 / 3), atol=1e-9)
    wide = beta_ppf(np.array([0.025, 0.975]), 5000.5, 5000.5)
    assert 0.98 * 0.5 < wide[0] < 0.5 < wide[1] < 1.02 * 0.5
    low, high = beta_interval(np.array([0.0, 0.9, 1.0]), np.array([10, 1000, 0]))
    assert low[0] == pytest.approx(0.0, abs=1e-4) and 0.02 < high[0] < 0.25
    assert 0.87 < low[1] < 0.9 < high[1] < 0.93
    assert low[2] < 0.01 and high[2] > 0.99  # no trials: the prior, nearly all of [0, 1]


def test_class_histograms_match_per_class_adds() -> None:
    from labeling.selection import class_histograms

    rng = np.random.default_rng(5)
    scores = rng.random(3000).astype(np.float32)
    classes = rng.integers(0, 7, 3000)
    hists = class_histograms(scores, classes)
    assert sorted(hists) == list(range(7))
    for c, h in hists.items():
        ref = ScoreHistogram.of(scores[classes == c])
        assert np.array_equal(h.counts, ref.counts)
        np.testing.assert_allclose(h.sums, ref.sums)
