import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.formats import (
    FormatError,
    IdSet,
    atomic_write_table,
    file_entry,
    hash_ids,
    parse_shard_path,
    read_manifest,
    shard_path,
    split_of,
    validate_dataset,
    write_manifest,
    write_shard,
)
from tests.pipelines.formats.builders import SPLITS, make_dataset, shard_rows

ROOT = Path(__file__).resolve().parents[3]
M64 = (1 << 64) - 1


def _reference_hash(text: str) -> int:
    """FNV-1a 64 then splitmix64, written out byte by byte: pins the documented hash forever."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & M64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def _manifest_json(dataset: str) -> dict:
    return json.loads(Path(dataset, "manifest.json").read_text())


def _rewrite_manifest(dataset: str, edit) -> None:
    raw = _manifest_json(dataset)
    edit(raw)
    Path(dataset, "manifest.json").write_text(json.dumps(raw))


@pytest.fixture
def dataset(tmp_path) -> str:
    return make_dataset(tmp_path)


# --- hashing and splits -------------------------------------------------------------------------------------


def test_hash_ids_matches_reference():
    ids = ["", "a", "img-000", "é-ünïcode", "x" * 300, "img-001"]
    assert hash_ids(pa.array(ids)).tolist() == [_reference_hash(i) for i in ids]
    chunked = pa.chunked_array([ids[:2], ids[2:]])
    assert hash_ids(chunked).tolist() == hash_ids(pa.array(ids, pa.large_string())).tolist()
    assert hash_ids(pa.array(ids).slice(2, 3)).tolist() == [_reference_hash(i) for i in ids[2:5]]
    assert hash_ids(pa.array([], pa.string())).tolist() == []
    with pytest.raises(ValueError):
        hash_ids(pa.array(["a", None]))


def test_id_set_membership():
    members = IdSet(pa.array([f"img-{i}" for i in range(1000)]))
    probe = pa.array(["img-5", "img-1000", "img-999", "ghost"])
    assert members.contains(probe).tolist() == [True, False, True, False]
    assert IdSet(pa.array([], pa.string())).contains(probe).tolist() == [False] * 4


def test_split_of_is_deterministic_and_proportional():
    ids = pa.array([f"img-{i:06d}" for i in range(20_000)])
    splits = split_of(ids, SPLITS)
    assert splits.type == pa.string()
    counts = dict(zip(*(c.to_pylist() for c in pc.value_counts(splits).flatten()), strict=True))
    assert counts.keys() == {"train", "val", "eval"}
    assert abs(counts["train"] / 20_000 - 0.5) < 0.02 and abs(counts["eval"] / 20_000 - 0.25) < 0.02
    # A row's split depends on its id only: not on the other rows or their order.
    reversed_ids = pa.array(ids.to_pylist()[::-1])
    assert split_of(reversed_ids, SPLITS).to_pylist() == splits.to_pylist()[::-1]
    assert split_of(ids.slice(100, 50), SPLITS).to_pylist() == splits.to_pylist()[100:150]
    assert set(split_of(ids, {"train": 1.0, "eval": 0.0}).to_pylist()) == {"train"}


def test_split_of_rejects_bad_fractions():
    with pytest.raises(ValueError):
        split_of(pa.array(["a"]), {"train": 0.9, "eval": 0.2})
    with pytest.raises(ValueError):
        split_of(pa.array(["a"]), {"Train": 1.0})


def test_split_of_ignores_pythonhashseed():
    ids = [f"img-{i}" for i in range(500)]
    here = split_of(pa.array(ids), SPLITS).to_pylist()
    code = (
        "import json, sys, pyarrow as pa\n"
        "from pipelines.formats import split_of\n"
        "ids = [f'img-{i}' for i in range(500)]\n"
        "print(json.dumps(split_of(pa.array(ids), {'train': 0.5, 'val': 0.25, 'eval': 0.25}).to_pylist()))\n"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here


def test_shard_paths():
    assert shard_path("train", 3, 128) == "shards/train-00003-of-00128.parquet"
    assert parse_shard_path("shards/eval-00000-of-00001.parquet") == ("eval", 0, 1)
    for bad in [("train", 1, 1), ("Train", 0, 1), ("a-b", 0, 1)]:
        with pytest.raises(ValueError):
            shard_path(*bad)
    with pytest.raises(ValueError):
        parse_shard_path("shards/train-00002-of-00002.parquet")


# --- manifest -----------------------------------------------------------------------------------------------


def test_manifest_round_trip_and_stable_bytes(dataset, tmp_path):
    manifest = read_manifest(dataset)
    assert manifest.dataset_id == "tiny" and manifest.schema_version == 2
    first = Path(dataset, "manifest.json").read_bytes()
    shuffled = manifest.model_copy(update={"shards": manifest.shards[::-1], "files": manifest.files[::-1]})
    write_manifest(dataset, shuffled)
    assert Path(dataset, "manifest.json").read_bytes() == first
    raw = json.loads(first)
    assert list(raw) == sorted(raw)
    assert [s["path"] for s in raw["shards"]] == sorted(s["path"] for s in raw["shards"])
    assert raw["created_at"] == "2026-01-02T03:04:05Z"
    assert sorted(os.listdir(dataset)) == [
        "candidates",
        "classes.parquet",
        "manifest.json",
        "rejects",
        "shards",
    ]


def test_missing_manifest_is_incomplete(tmp_path):
    dataset = make_dataset(tmp_path, manifest=False)
    with pytest.raises(FormatError) as info:
        validate_dataset(dataset)
    assert str(info.value) == f"{dataset}: incomplete: no manifest.json"


@pytest.mark.parametrize(
    ("edit", "column", "problem"),
    [
        (
            lambda m: m.update(schema_version=1),
            "schema_version",
            "unsupported version 1 (this webjft reads 2)",
        ),
        (lambda m: m.pop("dataset_id"), "dataset_id", "Field required"),
        (
            lambda m: m["shards"][0].update(rows=-1),
            "shards.0.rows",
            "Input should be greater than or equal to 0",
        ),
        (lambda m: m.update(surprise=1), "surprise", "Extra inputs are not permitted"),
    ],
)
def test_bad_manifest(dataset, edit, column, problem):
    _rewrite_manifest(dataset, edit)
    with pytest.raises(FormatError) as info:
        read_manifest(dataset)
    assert str(info.value) == f"{dataset}/manifest.json: {column}: {problem}"


def test_manifest_not_json(dataset):
    Path(dataset, "manifest.json").write_text("{not json")
    with pytest.raises(FormatError, match=r"manifest.json: not valid JSON: "):
        read_manifest(dataset)


# --- validate_dataset ---------------------------------------------------------------------------------------


def test_validate_good_dataset(dataset):
    summary = validate_dataset(dataset)
    expected = pc.value_counts(shard_rows().column("split")).to_pylist()
    assert summary.splits == {
        row["values"]: row["counts"] for row in sorted(expected, key=lambda r: r["values"])
    }
    assert (summary.images, summary.labels, summary.classes) == (12, 18, 3)
    assert summary.labels_per_image == 1.5 and summary.shards == 4 and summary.files == 3
    assert summary.warnings == {}
    assert validate_dataset(f"file://{dataset}").images == 12


def test_corrupted_shard_fails_sha256(dataset):
    shard = Path(dataset, "shards", "train-00000-of-00002.parquet")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(FormatError) as info:
        validate_dataset(dataset)
    message = str(info.value)
    assert message.startswith(f"{shard}: sha256 ") and "does not match manifest.json" in message


def test_missing_listed_file(dataset):
    Path(dataset, "rejects", "signals.parquet").unlink()
    with pytest.raises(FormatError, match=r"rejects/signals.parquet: listed in manifest.json but missing$"):
        validate_dataset(dataset)


def test_row_count_mismatch(dataset):
    _rewrite_manifest(dataset, lambda m: m["files"][0].update(rows=99))
    with pytest.raises(
        FormatError, match=r"candidates/part-00000.parquet: has 18 rows, manifest.json says 99$"
    ):
        validate_dataset(dataset)


def test_stray_shard_from_another_run(dataset):
    write_shard(shard_rows().slice(0, 0), dataset, "train", 0, 3)
    with pytest.raises(FormatError, match=r"train-00000-of-00003.parquet: not listed in manifest.json"):
        validate_dataset(dataset)


def test_missing_shard_in_sequence(dataset):
    _rewrite_manifest(
        dataset, lambda m: m.update(shards=[s for s in m["shards"] if "train-00001" not in s["path"]])
    )
    Path(dataset, "shards", "train-00001-of-00002.parquet").unlink()
    with pytest.raises(
        FormatError, match=r"manifest.json: shards: split 'train': shard 00001-of-00002 missing$"
    ):
        validate_dataset(dataset)


def test_path_outside_dataset(dataset):
    _rewrite_manifest(dataset, lambda m: m["files"][0].update(path="../elsewhere.parquet"))
    with pytest.raises(
        FormatError, match=r"manifest.json: files: '../elsewhere.parquet' is not a plain path"
    ):
        validate_dataset(dataset)


def test_counts_must_add_up(dataset):
    _rewrite_manifest(dataset, lambda m: m["counts"].update(images=13))
    with pytest.raises(FormatError, match=r"manifest.json: counts.images: says 13, shards hold 12$"):
        validate_dataset(dataset)


def _replace_shard(dataset: str, table: pa.Table, relpath: str = "shards/eval-00000-of-00001.parquet") -> str:
    """Overwrite a shard bypassing write_shard's checks, and re-list it so that only the content is wrong."""
    atomic_write_table(table, f"{dataset}/{relpath}")
    entry = file_entry(dataset, relpath)
    _rewrite_manifest(
        dataset,
        lambda m: [
            s.update(sha256=entry.sha256, rows=entry.rows) for s in m["shards"] if s["path"] == relpath
        ],
    )
    return f"{dataset}/{relpath}"


def _eval_rows(dataset: str) -> pa.Table:
    return pq.read_table(f"{dataset}/shards/eval-00000-of-00001.parquet")


@pytest.mark.parametrize(
    ("column", "values", "problem"),
    [
        ("labels", lambda n: [[7]] + [[1]] * (n - 1), "row 0 has label 7, outside 0..2"),
        ("labels", lambda n: [[1]] * (n - 1) + [[1, 1]], "row {last} lists label 1 twice"),
        ("scores", lambda n: [[0.5, 0.5]] + [[0.5]] * (n - 1), "row 0 has 2 scores for 1 labels"),
        ("scores", lambda n: [[0.5]] * (n - 1) + [[1.5]], "row {last} has score 1.5, outside [0, 1]"),
        ("split", lambda n: ["eval"] * (n - 1) + ["train"], "row {last} says 'train' in a 'eval' shard"),
    ],
)
def test_shard_content_errors(dataset, column, values, problem):
    rows = _eval_rows(dataset)
    n = rows.num_rows
    assert n >= 2
    labels = values(n) if column == "labels" else [[1]] * n
    scores = values(n) if column == "scores" else [[0.5] * len(row) for row in labels]
    table = rows.set_column(3, "labels", pa.array(labels, pa.list_(pa.int32())))
    table = table.set_column(4, "scores", pa.array(scores, pa.list_(pa.float32())))
    if column == "split":
        table = table.set_column(5, "split", pa.array(values(n)))
    shard = _replace_shard(dataset, table)
    with pytest.raises(FormatError) as info:
        validate_dataset(dataset)
    assert str(info.value) == f"{shard}: {column}: {problem.format(last=n - 1)}"


def test_classes_selected_must_match_shards(dataset):
    rows = _eval_rows(dataset)
    labels = rows.column("labels").to_pylist()
    row = labels.index([2])
    labels[row] = [1]  # same number of labels, another class
    _replace_shard(dataset, rows.set_column(3, "labels", pa.array(labels, pa.list_(pa.int32()))))
    with pytest.raises(
        FormatError, match=r"classes.parquet: selected: class 1 says \d+, shards hold \d+ labels$"
    ):
        validate_dataset(dataset)


def test_shard_schema_is_checked(dataset):
    rows = _eval_rows(dataset).drop_columns(["url"])
    shard = _replace_shard(dataset, rows)
    with pytest.raises(FormatError) as info:
        validate_dataset(dataset)
    assert str(info.value) == f"{shard}: url: missing column"


def test_write_shard_checks_split(tmp_path):
    rows = shard_rows()
    with pytest.raises(
        FormatError, match=r"shards/train-00000-of-00001.parquet: split: row \d+ says '(val|eval)'"
    ):
        write_shard(rows, str(tmp_path), "train", 0, 1)
    assert not Path(tmp_path, "shards", "train-00000-of-00001.parquet").exists()
