"""`webjft noise` from the outside, both input modes, on tiny data and without any network."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from index.audit import MIN_LABELS
from index.testdata import gaussian_classes
from pipelines.formats import read_manifest, validate_dataset
from pipelines.synthetic import generate_crawl, preset
from service.cli import app
from tests.index.builders import make_dataset, write_labelled_set

runner = CliRunner()


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output  # after any finished progress bars
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    return write_labelled_set(gaussian_classes(seed=2, n_classes=10, n_images=1500, n_verified=200), folder)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise-cli")
    generate_crawl(preset("tiny", seed=1, n_images=200, n_classes=10), str(root / "crawl"), workers=1)
    make_dataset(root / "crawl", root / "data")
    return root / "data"


def test_labels_mode_writes_tables_figure_and_report(labelled, tmp_path):
    labels, embeddings, verified = labelled
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings),
                                 "--verified", str(verified), "--out", str(out), "--backend", "faiss-cpu"])
    assert result.exit_code == 0, result.output
    assert "noisiest classes" in result.output and "Fig. 2" in result.output and "calibrated on 200" in result.output
    classes = pq.read_table(out / "classes.parquet")
    images = pq.read_table(out / "images.parquet")
    assert classes.num_rows == 10 and images.num_rows == 1500
    assert (out / "fig2.png").read_bytes().startswith(b"\x89PNG")
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "calibrated" and len(report["curve"]["estimated"]) == 10
    assert not report["stats"]["label_scores_used"] and not report["stats"]["hierarchy_used"]
    assert any(note.startswith("embeddings whitened") for note in report["notes"])
    raw = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings), "--verified",
                              str(verified), "--out", str(tmp_path / "raw"), "--backend", "faiss-cpu",
                              "--whiten-dims", "0"])
    assert raw.exit_code == 0, raw.output
    assert not any("whitened" in note for note in json.loads((tmp_path / "raw" / "report.json").read_text())["notes"])


def test_labels_mode_uses_a_scores_column(labelled, tmp_path):
    labels, embeddings, verified = labelled
    table = pq.read_table(labels)
    rng = np.random.default_rng(0)
    scores = [[float(v) for v in rng.uniform(0.2, 1.0, len(row))] for row in table.column("labels").to_pylist()]
    scored = tmp_path / "scored.parquet"
    pq.write_table(table.append_column("scores", pa.array(scores, pa.list_(pa.float32()))), scored)
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--labels", str(scored), "--embeddings", str(embeddings),
                                 "--verified", str(verified), "--out", str(out), "--backend", "faiss-cpu"])
    assert result.exit_code == 0, result.output
    assert "third signal" in result.output
    assert json.loads((out / "report.json").read_text())["stats"]["label_scores_used"]


def test_labels_mode_without_verified_is_unsupervised_and_says_so(labelled, tmp_path):
    labels, embeddings, _ = labelled
    result = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings),
                                 "--out", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    assert "unsupervised" in result.output


def test_labels_mode_takes_both_verified_formats_and_the_pairs_that_are_not_labels(labelled, tmp_path):
    """A crawl-format sample beside a dataset-format one (class ids and scores): pairs that are not labels of
    the set calibrate too; with no label scores in play, their own scores are not needed."""
    labels, embeddings, verified = labelled
    ids = pq.read_table(labels).column("image_id")
    lists = pq.read_table(labels).column("labels").to_pylist()
    pairs = pa.table({"image_id": ids.take(pa.array(range(0, 300, 3))),
                      "class_id": pa.array([(lists[i][0] + 1) % 10 for i in range(0, 300, 3)], pa.int32()),
                      "correct": pa.array([False] * 100), "score": pa.array([0.1] * 100, pa.float32())})
    pq.write_table(pairs, tmp_path / "dataset-verified.parquet")
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings), "--verified",
                                 str(verified), "--verified", str(tmp_path / "dataset-verified.parquet"), "--out",
                                 str(out), "--backend", "faiss-cpu"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "report.json").read_text())["stats"]
    assert stats["verified_used"] == 200 and stats["verified_candidates_used"] == 100
    assert "label" in stats["model_weights"]


def test_audit_sample_is_written_and_comes_back_as_a_second_verified_file(labelled, tmp_path):
    labels, embeddings, verified = labelled
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings), "--verified",
                                 str(verified), "--out", str(out), "--backend", "faiss-cpu", "--audit-sample", "50"])
    assert result.exit_code == 0, result.output
    assert "labels to verify next: 50" in result.output
    sample = pq.read_table(out / "audit-sample.parquet")
    assert sample.num_rows == 50 and sample.column("correct").null_count == 50
    assert json.loads((out / "report.json").read_text())["audit_sample"] == "audit-sample.parquet"
    checked = sample.set_column(sample.schema.get_field_index("correct"), "correct", pa.array([True] * 50))
    pq.write_table(checked, tmp_path / "checked.parquet")
    again = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings), "--verified",
                                str(verified), "--verified", str(tmp_path / "checked.parquet"), "--out",
                                str(tmp_path / "again"), "--backend", "faiss-cpu"])
    assert again.exit_code == 0, again.output
    assert "calibrated on 250 verified labels" in again.output
    # A sample with verdicts in it is never overwritten by a new one.
    pq.write_table(checked, out / "audit-sample.parquet")
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings),
                                        "--out", str(out), "--audit-sample", "10"]), "50 labels are already checked")
    assert pq.read_table(out / "audit-sample.parquet").column("correct").null_count == 0
    pq.write_table(sample, out / "audit-sample.parquet")
    # Unfilled, the sample is not a verified sample yet: a one-line error.
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings),
                                        "--verified", str(out / "audit-sample.parquet"), "--out",
                                        str(tmp_path / "o")]), "correct")
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings),
                                        "--out", str(tmp_path / "o"), "--audit-sample", "-1"]), "--audit-sample")


def test_audit_sample_draws_only_from_classes_with_enough_labels(labelled, tmp_path):
    labels, embeddings, verified = labelled
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings), "--verified",
                                 str(verified), "--out", str(out), "--backend", "faiss-cpu", "--audit-sample", "50",
                                 "--audit-min-labels", "1000000"])
    assert result.exit_code == 0, result.output
    assert "audit sample: 0 of the 50 labels asked for" in result.output
    assert pq.read_table(out / "audit-sample.parquet").num_rows == 0
    assert json.loads((out / "report.json").read_text())["audit_min_labels"] == 1000000
    default = next(p for p in typer.main.get_command(app).commands["noise"].params if p.name == "audit_min_labels")
    assert default.default == MIN_LABELS


def test_labels_mode_with_a_taxonomy_uses_its_keys_hierarchy_and_names(labelled, tmp_path):
    labels, embeddings, verified = labelled
    # Ten classes under one root (class 10); classes 0 and 1 share a name.
    names = ["crane", "Crane"] + [f"class {c}" for c in range(2, 10)] + ["thing"]
    taxonomy = pa.table({
        "class_id": pa.array(range(11), pa.int32()), "key": [f"k{c}" for c in range(11)], "name": names,
        "synonyms": pa.array([[] for _ in range(11)], pa.list_(pa.string())),
        "parents": pa.array([[10]] * 10 + [[]], pa.list_(pa.int32())),
    })
    pq.write_table(taxonomy, tmp_path / "taxonomy.parquet")
    keyed = pq.read_table(verified)
    keys = pa.array([f"k{key}" for key in keyed.column("class_key").to_pylist()])
    pq.write_table(keyed.set_column(1, "class_key", keys), tmp_path / "verified.parquet")
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(embeddings), "--verified",
                                 str(tmp_path / "verified.parquet"), "--taxonomy", str(tmp_path / "taxonomy.parquet"),
                                 "--out", str(out), "--backend", "faiss-cpu"])
    assert result.exit_code == 0, result.output
    assert "calibrated on 200" in result.output and "crane" in result.output.lower()
    stats = json.loads((out / "report.json").read_text())["stats"]
    assert stats["hierarchy_used"] and stats["shared_name_labels_used"] == 0  # one label per image here


def test_dataset_mode_embeds_estimates_and_updates_the_manifest(dataset):
    result = runner.invoke(app, ["noise", str(dataset), "--workers", "0", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output and "weak" in result.output
    assert "verified sample:" in result.output and "noisiest classes" in result.output
    listed = {entry.path for entry in read_manifest(dataset).files}
    assert {"noise/classes.parquet", "noise/images.parquet", "noise/fig2.png", "noise/report.json"} <= listed
    validate_dataset(dataset)
    images = pq.read_table(dataset / "noise" / "images.parquet")
    assert images.num_rows == read_manifest(dataset).counts.labels

    # Again with the cached embeddings exported as a file: same tables, nothing embedded.
    cache = sorted((dataset / "noise" / "embeddings").glob("*.parquet"))
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in cache]), dataset.parent / "emb.parquet")
    again = runner.invoke(app, ["noise", str(dataset), "--embeddings", str(dataset.parent / "emb.parquet")])
    assert again.exit_code == 0, again.output
    assert "RANDOM" not in again.output
    np.testing.assert_allclose(pq.read_table(dataset / "noise" / "images.parquet").column("p_noisy").to_numpy(),
                               images.column("p_noisy").to_numpy(), atol=1e-5)
    # The build's scores are the third signal unless turned off.
    assert "third signal" in result.output
    plain = runner.invoke(app, ["noise", str(dataset), "--embeddings", str(dataset.parent / "emb.parquet"),
                                "--no-label-scores", "--audit-sample", "25"])
    assert plain.exit_code == 0, plain.output
    assert "third signal" not in plain.output
    stats = json.loads((dataset / "noise" / "report.json").read_text())["stats"]
    assert not stats["label_scores_used"] and stats["hierarchy_used"]  # the dataset's classes carry parents
    sample = pq.read_table(dataset / "noise" / "audit-sample.parquet")
    assert sample.num_rows == 25
    assert sample.column("url").null_count == 0 and sample.column("class_name").null_count == 0
    assert "noise/audit-sample.parquet" in {entry.path for entry in read_manifest(dataset).files}
    validate_dataset(dataset)


def test_dataset_mode_prefers_its_own_verified_file_and_calibrates_on_pairs_not_kept(dataset, tmp_path):
    """A build writes verified.parquet: the crawl's checked pairs that were candidates, kept or not, with
    out-of-fold scores. Here one is made from the crawl's sample plus a wrong, low-scored pair per row."""
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)  # with its embeddings cache: nothing to embed again
    keys = pq.read_table(copy / "classes.parquet").column("key")
    sample = pq.read_table(f"{read_manifest(copy).config['crawl']}/verified.parquet")
    class_id = pc.index_in(sample.column("class_key"), value_set=keys).to_numpy().astype(np.int32)
    other = (class_id + 1) % len(keys)
    n = sample.num_rows
    pq.write_table(pa.table({
        "image_id": pa.concat_arrays([sample.column("image_id").combine_chunks()] * 2),
        "class_id": pa.array(np.concatenate([class_id, other]), pa.int32()),
        "correct": pa.concat_arrays([sample.column("correct").combine_chunks(), pa.array([False] * n)]),
        "score": pa.array(np.r_[np.full(n, 0.8), np.full(n, 0.05)], pa.float32()),
    }), copy / "verified.parquet")
    result = runner.invoke(app, ["noise", str(copy), "--workers", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((copy / "noise" / "report.json").read_text())
    assert f"verified sample: {copy / 'verified.parquet'}" in report["notes"]
    stats = report["stats"]
    assert stats["verified_used"] > 0 and stats["verified_candidates_used"] > 0
    assert stats["verified_used"] + stats["verified_candidates_used"] <= 2 * n
    assert any("not labels" in note for note in report["notes"])


def test_bad_invocations_are_one_line_errors(labelled, dataset, tmp_path):
    labels, embeddings, _ = labelled
    _one_line_error(runner.invoke(app, ["noise"]), "either DATASET or --labels")
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(labels), "--out", str(tmp_path)]),
                    "--labels needs --embeddings")
    _one_line_error(runner.invoke(app, ["noise", str(dataset), "--out", str(tmp_path)]), "--out and --taxonomy")
    _one_line_error(runner.invoke(app, ["noise", str(dataset), "--decode-on", "gpu"]), "--decode-on must be one of")
    _one_line_error(runner.invoke(app, ["noise", str(dataset), "--model", "ViT-B-32", "--weights",
                                        str(tmp_path / "missing.pt")]), "missing.pt not found")
    _one_line_error(runner.invoke(app, ["noise", str(tmp_path / "nowhere")]), "incomplete: no manifest.json")
    partial = tmp_path / "partial.parquet"
    table = pq.read_table(embeddings)
    pq.write_table(table.slice(0, 100), partial)
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(labels), "--embeddings", str(partial),
                                        "--out", str(tmp_path / "o")]), "labelled images have no embedding")
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(embeddings), "--embeddings", str(embeddings),
                                        "--out", str(tmp_path / "o")]), "labels")
    bad_scores = tmp_path / "bad_scores.parquet"
    table = pq.read_table(labels)
    pq.write_table(table.append_column("scores", pa.array([[2.0] * len(r) for r in table.column("labels").to_pylist()],
                                                          pa.list_(pa.float32()))), bad_scores)
    _one_line_error(runner.invoke(app, ["noise", "--labels", str(bad_scores), "--embeddings", str(embeddings),
                                        "--out", str(tmp_path / "o")]), "bad_scores.parquet: scores: row 0 has score 2")


def test_help_names_both_modes_and_the_backends():
    from index.embed import DECODE_ON
    from index.kmeans import BACKENDS
    from service.commands.noise import BACKENDS as listed
    from service.commands.noise import DECODE_ON as decoders

    assert listed == BACKENDS and decoders == DECODE_ON
    result = runner.invoke(app, ["noise", "--help"])
    assert result.exit_code == 0 and "--labels" in result.output and "--weights" in result.output
    assert "--decode-on" in result.output
