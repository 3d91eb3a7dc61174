"""Stage 3: page sizes, and the per-(image, class) candidate features that scoring reads.

Evidence mass
    The one measure of "how much evidence" used by ``image_share``, ``rival_share``, ``sibling_share``,
    ``ancestor_support`` and ``descendant_support``. Per evidence row it is ``damped(weight) / ambiguity``,
    where ``damped`` clips a negative weight to 0 (a vote against is not evidence for) and, for
    ``query_click``, replaces the click count c by ``log2(1 + c)`` (one click counts 1, eight clicks about 3:
    clicks follow position bias as much as relevance). A candidate's mass is the sum over its rows, so it
    adds up text evidence of every source and positive votes (a ``user_feedback`` vote has ambiguity 1).

Features (``FEATURES``, one row per candidate, sorted by image_id in UTF-8 byte order then class_id)
    ``w_<source>``      sum of weight / ambiguity over the candidate's rows of that built-in source; for
                        ``user_feedback`` (direct votes, ambiguity 1) this is the net vote.
    ``w_custom``        the same over every source not in ``SOURCES``.
    ``votes_for``       sum of the positive weights of ``user_feedback`` rows.
    ``votes_against``   sum of |weight| of the rows with a negative weight (a vote against, any source).
    ``n_signals``       evidence rows.
    ``n_pages``         distinct non-null page_id.
    ``n_sources``       distinct source names (each custom source counts).
    ``min_page_images`` smallest ``page_images`` over the rows that have one; 0 = no page evidence at all.
    ``min_named``       smallest ``n_named`` (1 when any row names this class alone).
    ``min_ambiguity``   smallest ``ambiguity``.
    ``ancestor_support``   mass of the same image's candidates that are ancestors of this class.
    ``descendant_support`` mass of the same image's candidates that are descendants of this class.
    ``image_share``     this candidate's mass / the image's total mass (0 when the image has none).
    ``rival_share``     the largest ``image_share`` among the image's other candidates that are neither
                        ancestors nor descendants of this class (0 when there is none): the strongest
                        competing reading of the same image.
    ``sibling_share``   the largest ``image_share`` among the image's other candidates that share a parent
                        with this class (0 when there is none): a look-alike named for the same image.
    ``image_candidates`` candidates of the image.

Sums run in float64 over rows in a canonical order (sorted by candidate, then by the row's source, weight
and ambiguity) and are rounded to float32 at the end, so shuffled input gives byte-identical output.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.matching import _strings
from labeling.taxonomy import Taxonomy

__all__ = [
    "FEATURES",
    "FEATURES_SCHEMA",
    "PAGE_SIZES",
    "SOURCES",
    "aggregate",
    "attach_page_images",
    "evidence_mass",
    "page_sizes",
]

SOURCES: tuple[str, ...] = (
    "alt_text",
    "page_title",
    "surrounding_text",
    "anchor_text",
    "query_click",
    "user_feedback",
)
"""The built-in web sources; `pipelines.formats` re-exports this one definition."""

_FLOAT = (
    *(f"w_{s}" for s in SOURCES),
    "w_custom",
    "votes_for",
    "votes_against",
)
FEATURES: tuple[str, ...] = (
    *_FLOAT,
    "n_signals",
    "n_pages",
    "n_sources",
    "min_page_images",
    "min_named",
    "min_ambiguity",
    "ancestor_support",
    "descendant_support",
    "image_share",
    "image_candidates",
    "rival_share",
    "sibling_share",
)
"""Candidate feature columns, in output order (after the keys image_id, class_id)."""

_INT = {"n_signals", "n_pages", "n_sources", "min_page_images", "min_named", "min_ambiguity", "image_candidates"}
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("class_id", pa.int32(), nullable=False),
        *(pa.field(name, pa.int32() if name in _INT else pa.float32(), nullable=False) for name in FEATURES),
    ]
)
"""The output of :func:`aggregate`."""

PAGE_SIZES = pa.schema([pa.field("page_id", pa.string(), nullable=False), pa.field("page_images", pa.int32())])
"""The output of :func:`page_sizes`."""

_QUERY_CLICK = SOURCES.index("query_click")
_USER_FEEDBACK = SOURCES.index("user_feedback")
_CUSTOM = len(SOURCES)
_NO_PAGE = np.iinfo(np.int32).max


def _numpy(column: pa.Array | pa.ChunkedArray, dtype: type, null: float | int = 0) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return np.full(len(column), null, dtype=dtype)
    if column.null_count:
        column = column.fill_null(null)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _codes(values: pa.Array) -> np.ndarray:
    """Dense int64 codes of a string array, -1 for null (arbitrary but deterministic for equal input)."""
    encoded = values.dictionary_encode()
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _source_codes(source: pa.Array) -> np.ndarray:
    """Index into SOURCES, or len(SOURCES) for a custom source."""
    index = pc.index_in(source, value_set=pa.array(SOURCES, pa.string()))
    return _numpy(index, np.int64, _CUSTOM)


def evidence_mass(source_code: np.ndarray, weight: np.ndarray, ambiguity: np.ndarray) -> np.ndarray:
    """Evidence mass per row (float64); see the module docstring. ``source_code`` indexes SOURCES."""
    damped = np.maximum(weight, 0.0)
    clicks = source_code == _QUERY_CLICK
    damped[clicks] = np.log2(1.0 + damped[clicks])
    return damped / ambiguity


def page_sizes(evidence: pa.Table) -> pa.Table:
    """Distinct images per page over the evidence rows that have a page_id, sorted by page_id.

    Complete only when every row of each page is in ``evidence`` (the pipeline buckets by page_id).
    """
    page = _strings(evidence.column("page_id"))
    image = _strings(evidence.column("image_id"))
    if page.null_count == len(page):
        return PAGE_SIZES.empty_table()
    pairs = pa.table({"page_id": page, "image_id": image}).filter(pc.is_valid(page))
    grouped = pairs.group_by("page_id").aggregate([("image_id", "count_distinct")])
    grouped = grouped.take(pc.sort_indices(grouped.column("page_id")))
    return pa.table(
        [grouped.column("page_id"), grouped.column("image_id_count_distinct").cast(pa.int32())],
        schema=PAGE_SIZES,
    )


def attach_page_images(evidence: pa.Table, sizes: pa.Table) -> pa.Table:
    """``evidence`` plus a ``page_images`` int32 column looked up from ``sizes``; row order is kept.

    Null where page_id is null or not in ``sizes``. This is the join the pipeline does between stage 3a and
    3b; in one process (tests, benchmarks) it is a ``pc.index_in`` and a take.
    """
    at = pc.index_in(_strings(evidence.column("page_id")), value_set=_strings(sizes.column("page_id")))
    page_images = sizes.column("page_images").combine_chunks().cast(pa.int32()).take(at)
    if "page_images" in evidence.column_names:
        evidence = evidence.drop_columns(["page_images"])
    return evidence.append_column(pa.field("page_images", pa.int32()), page_images)


def _distinct_per_group(group: np.ndarray, code: np.ndarray, n_groups: int) -> np.ndarray:
    """How many distinct non-negative codes each group has."""
    keep = code >= 0
    width = int(code.max(initial=0)) + 1
    pairs = np.sort(group[keep] * width + code[keep])  # a plain sort: np.unique's hash path is slower here
    new = np.ones(len(pairs), dtype=bool)
    new[1:] = pairs[1:] != pairs[:-1]
    return np.bincount(pairs[new] // width, minlength=n_groups)


def _hierarchy_support(
    image: np.ndarray, cls: np.ndarray, keys: np.ndarray, mass: np.ndarray, taxonomy: Taxonomy
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ancestor_support, descendant_support, lower, upper) per candidate; ``keys`` = image * n_classes +
    class, sorted; (lower[i], upper[i]) are the candidate rows of every (descendant, ancestor) pair.

    Each candidate is exploded over the taxonomy's ancestor closure into probe keys (image, ancestor) and
    joined to the candidates by binary search (they are sorted already, so this is a merge join without a
    hash table); every hit is one (descendant, ancestor) pair of the same image and feeds both features.
    """
    anc_class, anc = taxonomy.ancestor_pairs()
    n_classes = len(taxonomy)
    offsets = np.searchsorted(anc_class, np.arange(n_classes + 1, dtype=np.int32)).astype(np.int64)
    counts = offsets[cls + 1] - offsets[cls]
    lower = np.repeat(np.arange(len(keys), dtype=np.int64), counts)  # the candidate whose ancestors we probe
    before = np.cumsum(counts) - counts
    ancestor = anc[np.repeat(offsets[cls] - before, counts) + np.arange(int(counts.sum()))]
    probe = image[lower] * n_classes + ancestor
    at = np.minimum(np.searchsorted(keys, probe), max(len(keys) - 1, 0))
    hit = keys[at] == probe if len(keys) else np.zeros(0, dtype=bool)
    lower, upper = lower[hit], at[hit]
    ancestor_support = np.bincount(lower, weights=mass[upper], minlength=len(keys))
    descendant_support = np.bincount(upper, weights=mass[lower], minlength=len(keys))
    return ancestor_support, descendant_support, lower, upper


def _rival_mass(image: np.ndarray, mass: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Per candidate, the largest mass among its image's other candidates that are neither its ancestors nor
    its descendants (0 when none). ``image`` is sorted (candidates of an image are contiguous); (lower,
    upper) are the related pairs from `_hierarchy_support`.

    Each candidate walks down its image's candidates in decreasing mass (ties by row) and stops at the first
    that is neither itself nor related, so the work is the candidates times (related pairs + 1).
    """
    n = len(image)
    out = np.zeros(n)
    if n == 0:
        return out
    rows = np.arange(n, dtype=np.int64)
    ranked = np.lexsort((rows, -mass, image))  # per image (contiguous), heaviest first
    starts = np.searchsorted(image, image, side="left")
    ends = np.searchsorted(image, image, side="right")
    related = np.unique(np.concatenate([lower * n + upper, upper * n + lower]))
    open_rows, at = rows, starts.copy()
    while open_rows.size:
        live = at[open_rows] < ends[open_rows]
        open_rows = open_rows[live]
        other = ranked[at[open_rows]]
        key = open_rows * n + other
        pos = np.minimum(np.searchsorted(related, key), max(related.size - 1, 0))
        skip = (other == open_rows) | ((related[pos] == key) if related.size else np.zeros(open_rows.size, dtype=bool))
        done = open_rows[~skip]
        out[done] = mass[other[~skip]]
        open_rows = open_rows[skip]
        at[open_rows] += 1
    return out


def _sibling_mass(image: np.ndarray, cls: np.ndarray, mass: np.ndarray, taxonomy: Taxonomy) -> np.ndarray:
    """Per candidate, the largest mass among its image's other candidates sharing a parent with it (0 if none)."""
    n = len(image)
    parents = taxonomy.to_table().column("parents").combine_chunks()
    p_off = np.asarray(parents.offsets.to_numpy(), dtype=np.int64)
    p_val = np.asarray(parents.values.to_numpy(), dtype=np.int64)[p_off[0]:p_off[-1]]
    p_off = p_off - p_off[0]
    counts = p_off[cls + 1] - p_off[cls]
    row = np.repeat(np.arange(n, dtype=np.int64), counts)
    parent = p_val[np.repeat(p_off[cls] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))]
    if row.size == 0:
        return np.zeros(n)
    # Families (image, parent), heaviest member first; a member's heaviest other is the top, or the runner-up.
    order = np.lexsort((row, -mass[row], parent, image[row]))
    row, parent = row[order], parent[order]
    fam = image[row] * (len(taxonomy) + 1) + parent
    first = np.r_[True, fam[1:] != fam[:-1]]
    start = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    size = np.diff(np.append(start, fam.size))
    top = mass[row[start]][group]
    second = np.where(size > 1, mass[row[np.minimum(start + 1, fam.size - 1)]], 0.0)[group]
    best_other = np.where(np.arange(fam.size) == start[group], second, top)
    out = np.zeros(n)
    np.maximum.at(out, row, best_other)
    return out


def aggregate(evidence_with_page_images: pa.Table, taxonomy: Taxonomy) -> pa.Table:
    """Candidate features (FEATURES_SCHEMA) from EVIDENCE rows plus ``page_images``; see the module docstring.

    All of an image's evidence must be in the table for the image-level and hierarchy features to be exact
    (the pipeline buckets by image_id).
    """
    ev = evidence_with_page_images
    if "page_images" not in ev.column_names:
        raise ValueError("aggregate needs a page_images column: join page_sizes() onto the evidence first")
    if ev.num_rows == 0:
        return FEATURES_SCHEMA.empty_table()
    n_classes = len(taxonomy)

    # Images get codes in sorted image_id order, so sorting candidate keys sorts the output.
    encoded = _strings(ev.column("image_id")).dictionary_encode()
    if encoded.null_count:
        raise ValueError("image_id: null in evidence")
    by_id = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(by_id), dtype=np.int64)
    rank[by_id] = np.arange(len(by_id))
    cls = _numpy(ev.column("class_id"), np.int64)
    if len(cls) and (cls.min() < 0 or cls.max() >= n_classes):
        raise ValueError(f"class_id outside the taxonomy [0, {n_classes})")
    key = rank[encoded.indices.to_numpy()] * n_classes + cls

    source = _strings(ev.column("source"))
    src = _source_codes(source)
    weight = _numpy(ev.column("weight"), np.float32)
    amb = _numpy(ev.column("ambiguity"), np.int64, 1)

    # Canonical row order: by candidate, then by everything the float sums depend on.
    signature = (src << 56) | (np.minimum(amb, (1 << 24) - 1) << 32) | weight.view(np.uint32).astype(np.int64)
    order = pc.sort_indices(pa.table({"k": key, "s": signature}), [("k", "ascending"), ("s", "ascending")]).to_numpy()
    key, src, amb = key[order], src[order], amb[order]
    w = weight[order].astype(np.float64)
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    n_groups = len(starts)
    cand_keys = key[starts]
    image, cand_class = np.divmod(cand_keys, n_classes)

    def total(values: np.ndarray) -> np.ndarray:
        # bincount adds in row order, which the sort above made canonical.
        return np.bincount(group, weights=values, minlength=n_groups)

    out: dict[str, np.ndarray] = {}
    n_kinds = len(SOURCES) + 1
    by_source = np.bincount(group * n_kinds + src, weights=w / amb, minlength=n_groups * n_kinds)
    by_source = by_source.reshape(n_groups, n_kinds)
    for i, name in enumerate((*SOURCES, "custom")):
        out[f"w_{name}"] = by_source[:, i]
    out["votes_for"] = total(np.where(src == _USER_FEEDBACK, np.maximum(w, 0.0), 0.0))
    out["votes_against"] = total(np.maximum(-w, 0.0))
    out["n_signals"] = np.diff(np.append(starts, len(key)))
    out["n_pages"] = _distinct_per_group(group, _codes(_strings(ev.column("page_id")))[order], n_groups)
    custom = src == _CUSTOM
    names = np.where(custom, _codes(source)[order] + _CUSTOM, src) if custom.any() else src
    out["n_sources"] = _distinct_per_group(group, names, n_groups)
    page_images = _numpy(ev.column("page_images"), np.int64, _NO_PAGE)[order]
    min_page = np.minimum.reduceat(page_images, starts)
    out["min_page_images"] = np.where(min_page == _NO_PAGE, 0, min_page)
    out["min_named"] = np.minimum.reduceat(_numpy(ev.column("n_named"), np.int64, 1)[order], starts)
    out["min_ambiguity"] = np.minimum.reduceat(amb, starts)

    mass = total(evidence_mass(src, w, amb))
    out["ancestor_support"], out["descendant_support"], lower, upper = _hierarchy_support(
        image, cand_class, cand_keys, mass, taxonomy
    )
    image_mass = np.bincount(image, weights=mass)[image]

    def share(m: np.ndarray) -> np.ndarray:
        return np.divide(m, image_mass, out=np.zeros_like(m), where=image_mass > 0)

    out["image_share"] = share(mass)
    out["image_candidates"] = np.bincount(image)[image]
    out["rival_share"] = share(_rival_mass(image, mass, lower, upper))
    out["sibling_share"] = share(_sibling_mass(image, cand_class, mass, taxonomy))

    ids = encoded.dictionary.take(pa.array(by_id[image]))
    columns = [ids, pa.array(cand_class.astype(np.int32))]
    columns += [pa.array(out[name].astype(np.int32 if name in _INT else np.float32)) for name in FEATURES]
    return pa.table(columns, schema=FEATURES_SCHEMA)
