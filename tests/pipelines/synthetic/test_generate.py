"""The synthetic crawl keeps its promises: statistics match parameters, files validate, seeds reproduce."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from labeling.taxonomy import default_taxonomy
from pipelines.formats.crawl import validate_crawl
from pipelines.synthetic import generate_crawl, preset


def _read(folder: Path, kind: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((folder / kind).glob("*.parquet")))


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tiny_crawl_has_every_file_and_validates(tiny_crawl):
    out, report = tiny_crawl
    for name in ("taxonomy.parquet", "verified.parquet", "truth.parquet", "synth.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "images").glob("part-*.parquet"))) == 3  # 600 images, 250 per file
    assert len(list((out / "signals").glob("part-*.parquet"))) >= 2
    summary = validate_crawl(str(out))
    assert summary.images == report.n_images == 600
    assert summary.signals == report.n_signals
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tiny_crawl, tmp_path):
    out, _ = tiny_crawl  # rendered by two worker processes
    again = tmp_path / "again"
    generate_crawl(preset("tiny", seed=0), str(again), workers=1)
    assert _digests(again) == _digests(out)
    other = tmp_path / "other"
    generate_crawl(preset("tiny", seed=1, images=False), str(other))
    assert _digests(other)["truth.parquet"] != _digests(out)["truth.parquet"]


def test_refuses_to_overwrite_unless_asked(tiny_crawl, tmp_path):
    out = tmp_path / "crawl"
    generate_crawl(preset("tiny", seed=3, images=False, n_images=100), str(out))
    with pytest.raises(FileExistsError, match="already exists"):
        generate_crawl(preset("tiny", seed=3, images=False, n_images=100), str(out))
    generate_crawl(preset("tiny", seed=4, images=False, n_images=120), str(out), overwrite=True)
    assert pq.read_table(out / "truth.parquet").num_rows == 120


def test_label_cardinality_and_long_tail(stats_crawl):
    out, _, config = stats_crawl
    truth = pq.read_table(out / "truth.parquet")
    counts = pc.list_value_length(truth.column("labels")).to_numpy()
    # 1 + p_extra_label, minus the extras that coincide with the main class or have no parent.
    assert counts.mean() == pytest.approx(1 + config.p_extra_label, abs=0.04)
    labels = pc.list_flatten(truth.column("labels")).to_numpy()
    per_class = np.sort(np.bincount(labels))[::-1]
    per_class = per_class[per_class > 0]
    assert per_class[0] > 20 * np.median(per_class), "class frequencies should be long-tailed"


def _matched_accuracy(signals: pa.Table, truth: pa.Table, source: str) -> tuple[float, int]:
    """Fraction of a source's texts naming 1-3 classes in which some named class is a true label."""
    lexicon = default_taxonomy().lexicon()
    rows = signals.filter(pc.equal(signals.column("source"), source))
    label_sets = dict(zip(truth.column("image_id").to_pylist(), truth.column("labels").to_pylist(), strict=True))
    right = total = 0
    for image_id, text in zip(rows.column("image_id").to_pylist(), rows.column("text").to_pylist(), strict=True):
        named = {cid for _, ids in lexicon.find(text) for cid in ids}
        terms = lexicon.find(text)
        if not named or len(terms) > 3:  # names nothing, or a keyword-stuffed spam page
            continue
        total += 1
        right += bool(named & set(label_sets[image_id]))
    return right / total, total


@pytest.mark.parametrize("source", ["alt_text", "page_title", "surrounding_text", "anchor_text", "query_click"])
def test_text_sources_hit_their_accuracy(stats_crawl, source):
    out, _, config = stats_crawl
    signals, truth = _read(out, "signals"), pq.read_table(out / "truth.parquet")
    accuracy, n = _matched_accuracy(signals, truth, source)
    assert n > 2000
    # Measured through the lexicon, so homonyms and nested names can only add right matches.
    assert config.sources[source].accuracy - 0.02 <= accuracy <= config.sources[source].accuracy + 0.05


def test_feedback_votes_are_right_at_their_accuracy(stats_crawl):
    out, _, config = stats_crawl
    signals, truth = _read(out, "signals"), pq.read_table(out / "truth.parquet")
    feedback = signals.filter(pc.equal(signals.column("source"), "user_feedback"))
    assert feedback.num_rows > 400
    assert pc.all(pc.is_null(feedback.column("text"))).as_py()
    tax = default_taxonomy()
    label_sets = dict(zip(truth.column("image_id").to_pylist(), truth.column("labels").to_pylist(), strict=True))
    right = [
        (tax.id_of(key) in label_sets[image]) == (weight > 0)
        for image, key, weight in zip(feedback.column("image_id").to_pylist(),
                                      feedback.column("class_key").to_pylist(),
                                      feedback.column("weight").to_pylist(), strict=True)
    ]
    assert np.mean(right) == pytest.approx(config.sources["user_feedback"].accuracy, abs=0.04)


def test_realised_stats_are_recorded_and_match_parameters(stats_crawl):
    out, _, config = stats_crawl
    summary = json.loads((out / "synth.json").read_text())
    assert summary["config"]["seed"] == 7
    for source, params in config.sources.items():
        realised = summary["stats"]["sources"][source]["accuracy"]
        assert realised == pytest.approx(params.accuracy, abs=0.03), source
    assert summary["stats"]["spam_pages"] > 0


def test_pages_bleed_context_and_spam_stuffs_keywords(stats_crawl):
    out, _, _ = stats_crawl
    signals = _read(out, "signals")
    titles = signals.filter(pc.equal(signals.column("source"), "page_title"))
    per_page = titles.group_by("page_id").aggregate([("image_id", "count_distinct"), ("text", "count_distinct")])
    assert pc.max(per_page.column("text_count_distinct")).as_py() == 1, "one title per page"
    assert pc.mean(per_page.column("image_id_count_distinct")).as_py() > 3
    lexicon = default_taxonomy().lexicon()
    longest = max(set(titles.column("text").to_pylist()), key=len)
    assert len(lexicon.find(longest)) >= 15, "spam pages list many class names"


def test_verified_sample_is_checked_against_truth(stats_crawl):
    out, _, config = stats_crawl
    verified, truth = pq.read_table(out / "verified.parquet"), pq.read_table(out / "truth.parquet")
    assert verified.num_rows == config.n_verified
    tax = default_taxonomy()
    label_sets = dict(zip(truth.column("image_id").to_pylist(), truth.column("labels").to_pylist(), strict=True))
    for image, key, correct in zip(verified.column("image_id").to_pylist(), verified.column("class_key").to_pylist(),
                                   verified.column("correct").to_pylist(), strict=True):
        assert (tax.id_of(key) in label_sets[image]) == correct
    precision = np.mean(verified.column("correct").to_numpy(zero_copy_only=False))
    # Most candidates are wrong (spam pages, homonym readings, drift), as with raw web labels.
    assert 0.03 < precision < 0.5, "candidates are a noisy mix of right and wrong"


def test_some_true_labels_have_no_evidence(stats_crawl):
    out, _, config = stats_crawl
    signals, truth = _read(out, "signals"), pq.read_table(out / "truth.parquet")
    with_signal = set(signals.column("image_id").unique().to_pylist())
    silent = json.loads((out / "synth.json").read_text())["stats"]["silent_images"]
    assert silent == pytest.approx(config.p_silent_image * config.n_images, rel=0.2)
    assert len(with_signal) < truth.num_rows


def test_images_are_jpegs_whose_looks_follow_the_taxonomy(tiny_crawl):
    out, _ = tiny_crawl
    images = _read(out, "images")
    truth = pq.read_table(out / "truth.parquet")
    tax = default_taxonomy()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32)
                       for b in images.column("content").to_pylist()])
    assert pixels.shape[1:] == (64, 64, 3)
    assert images.column("width").to_pylist()[0] == 64
    assert Image.open(io.BytesIO(images.column("content")[0].as_py())).format == "JPEG"
    main = np.array([min(labels, key=lambda c: -tax.depth(c)) for labels in truth.column("labels").to_pylist()])
    flat = pixels.reshape(len(pixels), -1)
    flat = (flat - flat.mean(0)) / 255.0
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(flat), (2, 20_000))
    dist = np.linalg.norm(flat[a] - flat[b], axis=1)
    same = main[a] == main[b]
    siblings = np.array([bool(set(tax.parents(x)) & set(tax.parents(y))) for x, y in zip(main[a], main[b],
                                                                                          strict=True)]) & ~same
    other = ~same & ~siblings
    assert same.sum() > 100 and siblings.sum() > 100
    assert dist[same].mean() < dist[siblings].mean() < dist[other].mean()
