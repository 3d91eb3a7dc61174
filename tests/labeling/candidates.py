"""Simulated candidate-feature tables (labeling.evidence.FEATURES_SCHEMA) with known truth, for scoring tests.

Each candidate is right with probability `prior`; each source names it with a probability that depends on
whether it is right (so its accuracy P(right | named) is known); a share of wrong candidates come only
from keyword-stuffed lists (many classes named, page sources only), which raw per-source counts cannot
tell apart from honest page evidence.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from labeling.evidence import FEATURES, FEATURES_SCHEMA

# P(source names the candidate | right), P(... | wrong)
RATES = {
    "alt_text": (0.55, 0.06),
    "page_title": (0.60, 0.30),
    "surrounding_text": (0.45, 0.25),
    "anchor_text": (0.50, 0.10),
    "query_click": (0.65, 0.15),
}


def simulate(n: int, seed: int, prior: float = 0.2, spam: float = 0.3) -> tuple[pa.Table, np.ndarray]:
    """(features, right) for `n` simulated candidates."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prior
    cols: dict[str, np.ndarray] = {name: np.zeros(n) for name in FEATURES}
    for source, (p1, p0) in RATES.items():
        named = rng.random(n) < np.where(y, p1, p0)
        strength = 1.0 + (rng.poisson(np.where(y, 4.0, 1.0)) if source == "query_click" else 0.0)
        cols[f"w_{source}"] = named * strength
    stuffed = ~y & (rng.random(n) < spam)
    for source in ("alt_text", "anchor_text", "query_click"):
        cols[f"w_{source}"][stuffed] = 0.0
    for source in ("page_title", "surrounding_text"):
        cols[f"w_{source}"][stuffed] = 1.0
    nobody = sum(cols[f"w_{s}"] for s in RATES) == 0
    cols["w_page_title"][nobody] = 1.0  # every candidate has some evidence
    votes = rng.random(n) < 0.05
    good_vote = rng.random(n) < 0.9
    cols["votes_for"] = (votes & (y == good_vote)).astype(float)
    cols["votes_against"] = (votes & (y != good_vote)).astype(float)
    cols["w_user_feedback"] = cols["votes_for"] - cols["votes_against"]
    present = [cols[f"w_{s}"] > 0 for s in RATES]
    cols["n_sources"] = sum(p.astype(int) for p in present) + votes
    cols["n_signals"] = cols["n_sources"] + rng.poisson(1.0, n)
    cols["n_pages"] = ((cols["w_page_title"] > 0) | (cols["w_surrounding_text"] > 0)) * (1 + rng.poisson(0.5, n))
    cols["min_page_images"] = np.where(cols["n_pages"] > 0, 1 + rng.poisson(np.where(stuffed, 30, 6)), 0)
    cols["min_named"] = np.where(stuffed, rng.integers(15, 41, n), 1 + (rng.random(n) < 0.2))
    cols["min_ambiguity"] = 1 + (rng.random(n) < 0.05)
    cols["ancestor_support"] = np.where(y & (rng.random(n) < 0.3), rng.random(n) * 3, 0.0)
    cols["descendant_support"] = np.where(rng.random(n) < 0.05, rng.random(n), 0.0)
    cols["image_share"] = np.clip(np.where(y, rng.beta(4, 3, n), rng.beta(1, 6, n)), 0, 1)
    cols["image_candidates"] = 1 + rng.poisson(np.where(stuffed, 30, 5))
    # A wrong label usually loses to a stronger competing reading of its image; a right one rarely does.
    cols["rival_share"] = np.clip(np.where(y, rng.beta(1, 5, n), rng.beta(4, 2, n)), 0, 1)
    cols["sibling_share"] = np.where(rng.random(n) < 0.2, cols["rival_share"] * rng.random(n), 0.0)
    arrays = [pa.array([f"im{i:07d}" for i in range(n)]), pa.array(rng.integers(0, 50, n).astype(np.int32))]
    for field in FEATURES_SCHEMA:
        if field.name in cols:
            arrays.append(pa.array(cols[field.name].astype(field.type.to_pandas_dtype())))
    return pa.table(arrays, schema=FEATURES_SCHEMA), y


def accuracy(features: pa.Table, y: np.ndarray, source: str) -> float:
    """Empirical P(right | source names the candidate)."""
    named = features.column(f"w_{source}").to_numpy() > 0
    return float(y[named].mean())
