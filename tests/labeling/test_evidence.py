import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from labeling.evidence import (
    FEATURES,
    FEATURES_SCHEMA,
    PAGE_SIZES,
    SOURCES,
    aggregate,
    attach_page_images,
    page_sizes,
)
from labeling.matching import EVIDENCE, match_signals
from labeling.rejects import split_valid
from labeling.taxonomy import Taxonomy
from pipelines.formats import SOURCES as FORMAT_SOURCES
from pipelines.formats import hash_ids, read_images, read_signals, read_taxonomy, read_verified
from pipelines.synthetic import generate_crawl, preset
from tests.labeling.test_matching import make_taxonomy

# Classes of tests/labeling/test_matching.py: 0 animal > 1 mammal > 4 dog > 5 hound > 6 basset hound;
# 0 animal > 11 crane (bird).
COLUMNS = ["image_id", "class_id", "source", "weight", "page_id", "ambiguity", "n_named", "direct", "page_images"]
ROWS = [
    ("a", 4, "alt_text", 1.0, None, 1, 1, False, None),
    ("a", 4, "query_click", 3.0, None, 1, 2, False, None),  # mass log2(1 + 3) = 2
    ("a", 5, "page_title", 1.0, "p1", 2, 3, False, 3),  # mass 0.5
    ("a", 5, "surrounding_text", 1.0, "p2", 1, 1, False, 10),
    ("a", 5, "page_title", 1.0, "p1", 1, 1, False, 3),
    ("a", 1, "user_feedback", 1.0, None, 1, 1, True, None),
    ("a", 1, "user_feedback", -1.0, None, 1, 1, True, None),  # mass 0
    ("a", 0, "my_source", 2.0, None, 2, 4, False, None),  # custom source
    ("a", 11, "alt_text", 1.0, None, 2, 2, False, None),  # mass 0.5
    ("b", 4, "anchor_text", 1.0, None, 1, 1, False, None),
    ("b", 0, "user_feedback", -2.0, None, 1, 1, True, None),
]
# Masses of image a: dog 3, hound 2.5, mammal 1, animal 1, crane 0.5 (total 8); image b: dog 1, animal 0.
# Rivals skip ancestors and descendants: only crane competes with mammal/dog/hound, animal has none; crane and
# mammal are siblings (both under animal).
ZERO = dict.fromkeys(FEATURES, 0)
EXPECTED = {
    ("a", 0): {**ZERO, "w_custom": 1.0, "n_signals": 1, "n_sources": 1, "min_named": 4, "min_ambiguity": 2,
               "descendant_support": 1 + 3 + 2.5 + 0.5, "image_share": 1 / 8, "image_candidates": 5},  # all below it
    ("a", 1): {**ZERO, "votes_for": 1.0, "votes_against": 1.0, "n_signals": 2, "n_sources": 1, "min_named": 1,
               "min_ambiguity": 1, "ancestor_support": 1, "descendant_support": 3 + 2.5, "image_share": 1 / 8,
               "image_candidates": 5, "rival_share": 0.5 / 8, "sibling_share": 0.5 / 8},  # crane: both
    ("a", 4): {**ZERO, "w_alt_text": 1.0, "w_query_click": 3.0, "n_signals": 2, "n_sources": 2, "min_named": 1,
               "min_ambiguity": 1, "ancestor_support": 1 + 1, "descendant_support": 2.5, "image_share": 3 / 8,
               "image_candidates": 5, "rival_share": 0.5 / 8},
    ("a", 5): {**ZERO, "w_page_title": 1.5, "w_surrounding_text": 1.0, "n_signals": 3, "n_pages": 2,
               "n_sources": 2, "min_page_images": 3, "min_named": 1, "min_ambiguity": 1,
               "ancestor_support": 3 + 1 + 1, "image_share": 2.5 / 8, "image_candidates": 5, "rival_share": 0.5 / 8},
    ("a", 11): {**ZERO, "w_alt_text": 0.5, "n_signals": 1, "n_sources": 1, "min_named": 2, "min_ambiguity": 2,
                "ancestor_support": 1, "image_share": 0.5 / 8, "image_candidates": 5,
                "rival_share": 3 / 8, "sibling_share": 1 / 8},  # rival: dog (hound and mammal are lighter)
    ("b", 0): {**ZERO, "w_user_feedback": -2.0, "votes_against": 2.0, "n_signals": 1, "n_sources": 1,
               "min_named": 1, "min_ambiguity": 1, "descendant_support": 1, "image_candidates": 2},
    ("b", 4): {**ZERO, "w_anchor_text": 1.0, "n_signals": 1, "n_sources": 1, "min_named": 1, "min_ambiguity": 1,
               "image_share": 1.0, "image_candidates": 2},
}


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return make_taxonomy()


def evidence(rows=ROWS) -> pa.Table:
    schema = pa.schema([*EVIDENCE, pa.field("page_images", pa.int32())])
    cols = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.table([pa.array(list(c), f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


def test_sources_match_the_formats_contract() -> None:
    assert SOURCES == FORMAT_SOURCES
    assert FEATURES[:7] == tuple(f"w_{s}" for s in SOURCES) + ("w_custom",)


def test_hand_computed_features(tax: Taxonomy) -> None:
    out = aggregate(evidence(), tax)
    assert out.schema == FEATURES_SCHEMA
    assert out.column_names == ["image_id", "class_id", *FEATURES]
    got = {(r["image_id"], r["class_id"]): r for r in out.to_pylist()}
    assert list(got) == sorted(EXPECTED)
    for key, expected in EXPECTED.items():
        for name, value in expected.items():
            assert math.isclose(got[key][name], value, rel_tol=1e-6, abs_tol=1e-7), (key, name, got[key][name])


def test_types(tax: Taxonomy) -> None:
    out = aggregate(evidence(), tax)
    for name in FEATURES:
        assert out.schema.field(name).type in (pa.int32(), pa.float32()), name
    assert out.schema.field("n_pages").type == pa.int32()
    assert out.schema.field("image_share").type == pa.float32()


def test_shuffled_input_gives_identical_output(tax: Taxonomy) -> None:
    rng = np.random.default_rng(0)
    base = evidence(ROWS * 7)  # repeated rows: float sums over many terms
    expected = aggregate(base, tax)
    for _ in range(5):
        shuffled = base.take(pa.array(rng.permutation(base.num_rows)))
        assert aggregate(shuffled, tax).equals(expected)


def test_sorted_by_image_then_class(tax: Taxonomy) -> None:
    rows = [(img, cls, "alt_text", 1.0, None, 1, 1, False, None) for img, cls in
            [("b2", 3), ("a10", 9), ("a9", 1), ("b2", 0), ("a10", 2)]]
    out = aggregate(evidence(rows), tax)
    assert list(zip(out["image_id"].to_pylist(), out["class_id"].to_pylist(), strict=True)) == [
        ("a10", 2), ("a10", 9), ("a9", 1), ("b2", 0), ("b2", 3)]


def test_empty_and_missing_page_images(tax: Taxonomy) -> None:
    assert aggregate(evidence([]), tax).schema == FEATURES_SCHEMA
    assert aggregate(evidence([]), tax).num_rows == 0
    with pytest.raises(ValueError, match="page_images"):
        aggregate(evidence().drop_columns(["page_images"]), tax)


def test_page_sizes_and_attach() -> None:
    ev = evidence([
        ("a", 4, "page_title", 1.0, "p1", 1, 1, False, None),
        ("a", 5, "page_title", 1.0, "p1", 1, 1, False, None),
        ("b", 4, "page_title", 1.0, "p1", 1, 1, False, None),
        ("a", 4, "surrounding_text", 1.0, "p0", 1, 1, False, None),
        ("c", 4, "alt_text", 1.0, None, 1, 1, False, None),
    ]).drop_columns(["page_images"])
    sizes = page_sizes(ev)
    assert sizes.schema == PAGE_SIZES
    assert sizes.to_pylist() == [{"page_id": "p0", "page_images": 1}, {"page_id": "p1", "page_images": 2}]
    joined = attach_page_images(ev, sizes)
    assert joined["page_images"].to_pylist() == [2, 2, 2, 1, None]
    assert joined.drop_columns(["page_images"]).equals(ev)
    assert page_sizes(ev.filter(pc.is_null(ev["page_id"]))).num_rows == 0


@pytest.fixture(scope="module")
def tiny_crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("labeling") / "tiny"
    generate_crawl(preset("tiny", seed=0, images=False), str(out))
    return out


def test_end_to_end_on_tiny_synthetic_crawl(tiny_crawl) -> None:
    taxonomy = read_taxonomy(tiny_crawl)
    signals = read_signals(tiny_crawl)
    images = read_images(tiny_crawl, columns=["image_id"]).column("image_id")
    keys = taxonomy.to_table().column("key")
    valid, rejects = split_valid(signals, file="signals", first_row=0, known_image_ids=images,
                                 known_class_keys=keys)
    assert valid.num_rows + rejects.num_rows == signals.num_rows
    assert rejects.num_rows == 0  # the generator writes only usable rows
    ev = match_signals(valid, taxonomy)
    sizes = page_sizes(ev)
    features = aggregate(attach_page_images(ev, sizes), taxonomy)

    candidates = set(zip(features["image_id"].to_pylist(), features["class_id"].to_pylist(), strict=True))
    verified = read_verified(tiny_crawl)
    pairs = list(zip(verified["image_id"].to_pylist(), taxonomy.ids_of(verified["class_key"]).tolist(),
                     strict=True))
    coverage = np.mean([pair in candidates for pair in pairs])
    assert coverage >= 0.95, coverage
    # Page sizes count images with evidence on the page: at most the images the page has signals for.
    per_page = signals.filter(pc.is_valid(signals["page_id"])).group_by("page_id").aggregate(
        [("image_id", "count_distinct")])
    expected = dict(zip(per_page["page_id"].to_pylist(), per_page["image_id_count_distinct"].to_pylist(),
                        strict=True))
    got = dict(zip(sizes["page_id"].to_pylist(), sizes["page_images"].to_pylist(), strict=True))
    assert len(got) > 0.9 * len(expected)
    assert all(size <= expected[page] for page, size in got.items())
    assert np.mean([size == expected[page] for page, size in got.items()]) > 0.8
    assert features["image_share"].to_numpy().max() <= 1.0 + 1e-6
    assert (features["n_signals"].to_numpy() >= 1).all()

    # Shuffled signals: identical features (Beam delivers bucket contents in any order).
    shuffled = valid.take(pa.array(np.random.default_rng(1).permutation(valid.num_rows)))
    ev2 = match_signals(shuffled, taxonomy)
    assert aggregate(attach_page_images(ev2, page_sizes(ev2)), taxonomy).equals(features)

    # Buckets by hash(image_id), as the pipeline shuffles: per-bucket results concatenate to the same rows.
    joined = attach_page_images(ev, sizes)
    bucket = hash_ids(joined["image_id"]) % np.uint64(3)
    parts = [aggregate(joined.filter(pa.array(bucket == k)), taxonomy) for k in range(3)]
    merged = pa.concat_tables(parts)
    merged = merged.take(pc.sort_indices(merged, [("image_id", "ascending"), ("class_id", "ascending")]))
    assert merged.combine_chunks().equals(features.combine_chunks())


def test_rival_and_sibling_shares_match_brute_force(tax: Taxonomy) -> None:
    rng = np.random.default_rng(3)
    sources = ["alt_text", "anchor_text", "page_title", "query_click"]
    rows = [(f"im{rng.integers(6)}", int(rng.integers(len(tax))), sources[rng.integers(4)],
             float(rng.integers(1, 4)), None, 1, 1, False, None) for _ in range(120)]
    out = aggregate(evidence(rows), tax).to_pylist()
    share = {(r["image_id"], r["class_id"]): r["image_share"] for r in out}
    for r in out:
        image, c = r["image_id"], r["class_id"]
        related = set(tax.ancestors(c).tolist()) | set(tax.descendants(c).tolist())
        others = [(k, s) for (i, k), s in share.items() if i == image and k != c]
        rival = max((s for k, s in others if k not in related), default=0.0)
        sibling = max((s for k, s in others if set(tax.parents(k).tolist()) & set(tax.parents(c).tolist())),
                      default=0.0)
        assert r["rival_share"] == pytest.approx(rival, abs=1e-6), (image, c)
        assert r["sibling_share"] == pytest.approx(sibling, abs=1e-6), (image, c)
    assert any(r["rival_share"] > 0 for r in out) and any(r["sibling_share"] > 0 for r in out)
