"""Model inputs derived from the candidate-feature columns (docs/build.md, "Candidate features").

Raw evidence sums are heavy-tailed (click counts, spam pages naming 40 classes, pages with 60 images),
so the supervised scorer sees log-damped strengths, per-source presence, vote balance, page-size and
keyword-stuffing damping, hierarchy support and image-level context. The label model sees the same
evidence as a few discrete "voters". Both read the columns by name, so extra columns are ignored.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["COUNT_COLUMNS", "SOURCE_COLUMNS", "column", "count_design", "engineered_design", "voter_states"]

SOURCE_COLUMNS: tuple[str, ...] = (
    "w_alt_text",
    "w_page_title",
    "w_surrounding_text",
    "w_anchor_text",
    "w_query_click",
    "w_user_feedback",
    "w_custom",
)
"""Per-source evidence sums (weight / ambiguity; net vote for user feedback)."""

COUNT_COLUMNS: tuple[str, ...] = SOURCE_COLUMNS
"""What the plain baseline sees: the raw per-source sums, untransformed."""

_PAGE_SOURCES = ("w_page_title", "w_surrounding_text")
_OWN_SOURCES = ("w_alt_text", "w_anchor_text", "w_query_click")  # evidence tied to the image itself

STUFFED_NAMED = 4
"""A text naming at least this many classes is treated as a list (or keyword stuffing), not a caption."""

COMPETITOR_OFFSET = 0.01
"""Added to shares before the log-ratio against a competitor, so a candidate without one stays finite."""

_DEFAULTS: dict[str, float] = {"w_custom": 0.0, "votes_for": 0.0, "votes_against": 0.0}
"""Columns a candidate table may lack (older builds, no custom sources): the value they mean."""


def column(features: pa.Table, name: str) -> np.ndarray:
    """A feature column as float64 with nulls as 0; a missing column is an error unless it has a default."""
    if name not in features.column_names:
        if name in _DEFAULTS:
            return np.full(features.num_rows, _DEFAULTS[name])
        raise KeyError(f"features: missing column {name!r} (have {', '.join(features.column_names)})")
    col = features.column(name)
    if col.null_count:
        col = pc.fill_null(col, 0)
    return np.asarray(col.to_numpy(), dtype=np.float64)


def count_design(features: pa.Table) -> tuple[np.ndarray, list[str]]:
    """The raw per-source sums: the 'plain logistic regression' baseline's inputs."""
    return np.column_stack([column(features, c) for c in COUNT_COLUMNS]), list(COUNT_COLUMNS)


def engineered_design(features: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Engineered inputs of the supervised scorer (n_rows x n_features, float64) and their names."""
    cols: dict[str, np.ndarray] = {}
    w = {c: column(features, c) for c in SOURCE_COLUMNS}
    for c in SOURCE_COLUMNS:
        if c == "w_user_feedback":
            continue
        cols[f"log1p_{c}"] = np.log1p(np.maximum(w[c], 0.0))
        cols[f"has_{c[2:]}"] = (w[c] > 0).astype(np.float64)
    votes_for, votes_against = column(features, "votes_for"), column(features, "votes_against")
    cols["log1p_votes_for"] = np.log1p(votes_for)
    cols["log1p_votes_against"] = np.log1p(votes_against)
    cols["vote_balance"] = (votes_for - votes_against) / (votes_for + votes_against + 1.0)

    n_sources = column(features, "n_sources")
    cols["n_sources"] = n_sources
    cols["log1p_n_signals"] = np.log1p(column(features, "n_signals"))
    n_pages = column(features, "n_pages")
    cols["log1p_n_pages"] = np.log1p(n_pages)
    own = sum((w[c] > 0).astype(np.float64) for c in _OWN_SOURCES)
    page = sum((w[c] > 0).astype(np.float64) for c in _PAGE_SOURCES)
    cols["own_sources"] = own
    cols["page_only"] = ((own == 0) & (page > 0) & (votes_for == 0)).astype(np.float64)

    # A page title is shared by every image on the page: the bigger the page, the less it says per image.
    page_images = column(features, "min_page_images")
    log_page = np.log(np.maximum(page_images, 1.0))
    cols["log_min_page_images"] = log_page
    cols["page_title_x_log_page"] = cols["log1p_w_page_title"] * log_page
    # Keyword stuffing and topic lists name many classes at once; homonyms many senses.
    named = np.maximum(column(features, "min_named"), 1.0)
    cols["log_min_named"] = np.log(named)
    cols["inv_min_named"] = 1.0 / named
    ambiguity = np.maximum(column(features, "min_ambiguity"), 1.0)
    cols["log_min_ambiguity"] = np.log(ambiguity)

    ancestor, descendant = column(features, "ancestor_support"), column(features, "descendant_support")
    cols["log1p_ancestor_support"] = np.log1p(np.maximum(ancestor, 0.0))
    cols["log1p_descendant_support"] = np.log1p(np.maximum(descendant, 0.0))
    share = column(features, "image_share")
    cols["image_share"] = share
    cols["log1p_image_candidates"] = np.log1p(column(features, "image_candidates"))
    cols["share_x_own_sources"] = share * own
    cols["share_x_n_sources"] = share * n_sources
    # Competing readings of the same image: wrong labels tend to lose to a stronger unrelated candidate
    # (another object, topic drift) or to a look-alike sibling; a ratio near or above 1 says "this one wins".
    rival, sibling = column(features, "rival_share"), column(features, "sibling_share")
    log_share = np.log(share + COMPETITOR_OFFSET)
    cols["rival_share"] = rival
    cols["log_share_over_rival"] = log_share - np.log(rival + COMPETITOR_OFFSET)
    cols["sibling_share"] = sibling
    cols["log_share_over_sibling"] = log_share - np.log(sibling + COMPETITOR_OFFSET)
    names = list(cols)
    return np.column_stack([cols[n] for n in names]), names


def voter_states(features: pa.Table, edges: dict[str, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """Each candidate's evidence as discrete voters (n_rows x n_voters int, state 0 = abstain/absent).

    Sources vote by strength: absent, weak, strong (split at the median of the source's present
    log-strength, learnt once and then reused through `edges`). Feedback votes for / against. Two
    context voters carry what a source cannot: keyword stuffing (classes named by the text) and the
    candidate's share of its image's evidence.
    """
    learn = edges is None
    edges = {} if edges is None else dict(edges)
    states: dict[str, np.ndarray] = {}
    named = column(features, "min_named")
    for c in SOURCE_COLUMNS:
        if c == "w_user_feedback":
            continue
        strength = np.log1p(np.maximum(column(features, c), 0.0))
        present = strength > 0
        if learn:
            edges[c] = np.array([np.median(strength[present])]) if present.any() else np.array([np.inf])
        states[c[2:]] = np.where(present, 1 + (strength > edges[c][0]), 0).astype(np.int8)
    net = column(features, "votes_for") - column(features, "votes_against")
    states["user_feedback"] = np.where(net > 0, 1, np.where(net < 0, 2, 0)).astype(np.int8)
    states["named"] = np.digitize(named, [1.5, STUFFED_NAMED - 0.5]).astype(np.int8)  # 1 / 2-3 / 4+ named
    share = column(features, "image_share")
    if learn:
        edges["image_share"] = np.quantile(share, [1 / 3, 2 / 3]) if share.size else np.array([0.0, 0.0])
    states["image_share"] = np.digitize(share, edges["image_share"]).astype(np.int8)
    names = list(states)
    return np.column_stack([states[n] for n in names]), names, edges
