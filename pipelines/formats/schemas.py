"""The Arrow schemas of every file webjft reads or writes (DESIGN.md, sections marked contract).

`nullable=False` marks a required value: readers reject a null there, naming the first offending row.
Changing any schema here is a contract change: bump `SCHEMA_VERSION` and note it in DESIGN.md.
"""

from __future__ import annotations

import pyarrow as pa

from labeling.evidence import FEATURES, FEATURES_SCHEMA, SOURCES
from labeling.taxonomy import TAXONOMY_SCHEMA

SCHEMA_VERSION = 2
"""Version of the dataset layout written into `manifest.json`; readers refuse versions they do not know.

History: 1, the first layout; 2 (2026-11-26), `candidates/` gains the evidence features `rival_share` and
`sibling_share` (docs/build.md). A version-1 dataset must be rebuilt to be reselected or validated."""

# SOURCES (imported above from labeling, which owns it): the built-in web sources. A crawl may carry its own
# source names too ("custom sources").


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


# --- crawl (input) ---------------------------------------------------------------------------------------

IMAGES = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("url", pa.string()),
        _optional("content", pa.binary()),  # encoded JPEG/PNG; null for URL-only crawls
        _required("width", pa.int32()),
        _required("height", pa.int32()),
    ]
)

SIGNALS = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("source", pa.string()),
        _optional("text", pa.string()),
        _optional("class_key", pa.string()),  # set when the evidence names a class directly
        _required("weight", pa.float32()),  # click count, vote weight; negative votes against
        _optional("page_id", pa.string()),
    ]
)

SIGNAL_DEFAULTS: dict[str, object] = {"weight": 1.0}
"""Values a reader fills in when a crawl file lacks the column altogether ("1 by default")."""

TAXONOMY = TAXONOMY_SCHEMA
"""Owned by `labeling.taxonomy`; re-exported so that every file schema can be found here."""

VERIFIED = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("class_key", pa.string()),
        _required("correct", pa.bool_()),
    ]
)

DATASET_VERIFIED = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("class_id", pa.int32()),
        _required("correct", pa.bool_()),
        _required("score", pa.float32()),
    ]
)
"""A dataset's `verified.parquet`: the crawl's verified pairs that were candidates, with out-of-fold scores.

Selection corrects each class's calibration from these; reselect needs them to choose the same way; the noise
index calibrates on them (kept or not)."""

TRUTH = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("labels", pa.list_(pa.int32())),
    ]
)
"""Synthetic crawls only: the real labels. Evaluation may read it; no pipeline stage may."""

# --- dataset (output) ------------------------------------------------------------------------------------

CLASSES = pa.schema(
    [
        _required("class_id", pa.int32()),
        _required("key", pa.string()),
        _required("name", pa.string()),
        _required("parents", pa.list_(pa.int32())),
        _required("threshold", pa.float32()),  # score cut; +inf when nothing is selected
        _required("candidates", pa.int64()),
        _required("selected", pa.int64()),
        _optional("precision", pa.float32()),  # null when the class has no candidates to estimate from
        _optional("precision_low", pa.float32()),
        _optional("precision_high", pa.float32()),
    ]
)

SHARD = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("url", pa.string()),
        _optional("content", pa.binary()),
        _required("labels", pa.list_(pa.int32())),
        _required("scores", pa.list_(pa.float32())),  # calibrated P(label right), aligned with labels
        _required("split", pa.string()),
    ]
)

EVIDENCE_COLUMNS: tuple[str, ...] = tuple(f"w_{source}" for source in SOURCES) + ("w_custom",)
"""Per-source weight sums of a candidate; `w_custom` adds up every source not in `SOURCES`."""

CANDIDATES = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("class_id", pa.int32()),
        *(FEATURES_SCHEMA.field(name).with_nullable(False) for name in FEATURES),
        _required("score", pa.float32()),  # calibrated P(label right)
        _required("selected", pa.bool_()),  # kept at the dataset's target precision
    ]
)
"""Every (image, class) candidate of a build: its evidence features (`labeling.evidence.FEATURES`, documented
there), its score and whether selection kept it; `webjft reselect` re-runs selection from these files."""

REJECTS = pa.schema(
    [
        _required("file", pa.string()),
        _required("row", pa.int64()),  # 0-based row within `file`
        _required("field", pa.string()),
        _required("reason", pa.string()),
        _optional("value", pa.string()),  # the offending value, rendered as text, when there is one
    ]
)

NOISE_CLASSES = pa.schema(
    [
        _required("class_id", pa.int32()),
        _required("n_images", pa.int64()),
        _required("noise_rate", pa.float32()),
        _required("noise_low", pa.float32()),
        _required("noise_high", pa.float32()),
        _required("method", pa.string()),
    ]
)

NOISE_IMAGES = pa.schema(
    [
        _required("image_id", pa.string()),
        _required("class_id", pa.int32()),
        _required("distance", pa.float32()),
        _required("p_noisy", pa.float32()),
    ]
)
