import pickle
import random

import numpy as np
import pyarrow as pa
import pytest

from labeling.matching import EVIDENCE, match_signals
from labeling.taxonomy import TAXONOMY_SCHEMA, Taxonomy, default_taxonomy
from labeling.text import normalize

# Nested names on purpose: "sea lion" holds "sea" and "lion"; "great white shark" holds "white shark" and
# "shark"; "basset hound" holds "hound"; "crane" is a homonym (bird, machine).
ROWS = [
    (0, "k_animal", "animal", [], []),
    (1, "k_mammal", "mammal", [], [0]),
    (2, "k_lion", "lion", [], [1]),
    (3, "k_sea_lion", "sea lion", [], [1]),
    (4, "k_dog", "dog", [], [1]),
    (5, "k_hound", "hound", ["hound dog"], [4]),
    (6, "k_basset", "basset hound", ["basset"], [5]),
    (7, "k_fish", "fish", [], [0]),
    (8, "k_shark", "shark", [], [7]),
    (9, "k_white_shark", "white shark", [], [8]),
    (10, "k_gws", "great white shark", [], [9]),
    (11, "k_crane_bird", "crane", [], [0]),
    (12, "k_machine", "machine", [], []),
    (13, "k_crane_machine", "crane", ["tower crane"], [12]),
    (14, "k_sea", "sea", [], []),
]


def make_taxonomy(rows=ROWS) -> Taxonomy:
    cols = list(zip(*rows, strict=True))
    return Taxonomy.from_table(
        pa.table([pa.array(list(c), f.type) for c, f in zip(cols, TAXONOMY_SCHEMA, strict=True)],
                 schema=TAXONOMY_SCHEMA)
    )


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return make_taxonomy()


def signals(texts, keys=None, **columns) -> pa.Table:
    n = len(texts)
    return pa.table({
        "image_id": columns.get("image_id", [f"im{i}" for i in range(n)]),
        "source": columns.get("source", ["alt_text"] * n),
        "text": pa.array(texts, pa.string()),
        "class_key": pa.array(keys or [None] * n, pa.string()),
        "weight": pa.array(columns.get("weight", [1.0] * n), pa.float32()),
        "page_id": pa.array(columns.get("page_id", [None] * n), pa.string()),
    })


def per_row(evidence: pa.Table) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in evidence.to_pylist():
        out.setdefault(r["image_id"], []).append((r["class_id"], r["ambiguity"], r["n_named"], r["direct"]))
    return out


def test_schema_is_the_contract(tax: Taxonomy) -> None:
    assert EVIDENCE.names == ["image_id", "class_id", "source", "weight", "page_id", "ambiguity", "n_named",
                              "direct"]
    assert [str(f.type) for f in EVIDENCE] == ["string", "int32", "string", "float", "string", "int32", "int32",
                                               "bool"]
    assert match_signals(signals(["a sea lion"]), tax).schema == EVIDENCE
    assert match_signals(signals([]), tax).schema == EVIDENCE


def test_maximal_matches_only(tax: Taxonomy) -> None:
    got = per_row(match_signals(signals([
        "a sea lion on the rocks",  # not lion, not sea
        "a lion by the sea",  # both, separately
        "Great White Sharks!",  # not white shark, not shark
        "a white shark and a shark",  # white shark, and the second, separate shark
        "basset hound dog",  # "basset hound" and "hound dog" overlap without nesting: both kept
        "nothing here",
        "a sea lion and a lion",  # spans, not terms: the second lion stands alone
    ]), tax))
    assert got["im0"] == [(3, 1, 1, False)]
    assert got["im1"] == [(2, 1, 2, False), (14, 1, 2, False)]
    assert got["im2"] == [(10, 1, 1, False)]
    assert got["im3"] == [(8, 1, 2, False), (9, 1, 2, False)]
    assert got["im4"] == [(5, 1, 2, False), (6, 1, 2, False)]
    assert "im5" not in got
    assert got["im6"] == [(2, 1, 2, False), (3, 1, 2, False)]


def test_homonyms_are_ambiguous(tax: Taxonomy) -> None:
    got = per_row(match_signals(signals(["a crane", "crane lifting a tower crane", "crane, crane, crane"]), tax))
    assert got["im0"] == [(11, 2, 2, False), (13, 2, 2, False)]
    # The unambiguous "tower crane" wins for the machine; the bird keeps ambiguity 2.
    assert got["im1"] == [(11, 2, 2, False), (13, 1, 2, False)]
    # A class named several times by one text counts once.
    assert got["im2"] == [(11, 2, 2, False), (13, 2, 2, False)]


def test_n_named_for_a_stuffed_text(tax: Taxonomy) -> None:
    stuffed = "lion, dog, shark, sea lion, fish, machine, basset, mammal, dog, dog"
    got = per_row(match_signals(signals([stuffed, "dog"]), tax))
    classes = [c for c, *_ in got["im0"]]
    assert classes == [1, 2, 3, 4, 6, 7, 8, 12]
    assert {named for _, _, named, _ in got["im0"]} == {8}
    assert got["im1"] == [(4, 1, 1, False)]


def test_direct_class_key_rows(tax: Taxonomy) -> None:
    table = signals([None, "a dog", "a dog", None, "  "], keys=["k_shark", "k_shark", "", None, "k_crane_bird"],
                    weight=[-1.0, 2.0, 3.0, 1.0, 1.0], source=["user_feedback"] * 5, page_id=["p", None, None, None,
                                                                                             None])
    ev = match_signals(table, tax)
    rows = ev.to_pylist()
    assert [(r["image_id"], r["class_id"], r["direct"]) for r in rows] == [
        ("im1", 4, False), ("im2", 4, False),  # text evidence first, in row order
        ("im0", 8, True), ("im1", 8, True), ("im4", 11, True),  # then direct evidence
    ]
    direct = [r for r in rows if r["direct"]]
    assert all(r["ambiguity"] == 1 and r["n_named"] == 1 for r in direct)
    assert [r["weight"] for r in direct] == [-1.0, 2.0, 1.0]
    assert direct[0]["page_id"] == "p" and direct[0]["source"] == "user_feedback"


def test_unknown_class_key_is_a_wiring_error(tax: Taxonomy) -> None:
    with pytest.raises(ValueError, match="'k_nope' is not in the taxonomy"):
        match_signals(signals([None], keys=["k_nope"]), tax)


def test_carried_columns_and_record_batch(tax: Taxonomy) -> None:
    table = signals(["sea lion", "crane"], source=["page_title", "my_source"], weight=[1.0, 5.0],
                    page_id=["p1", None])
    ev = match_signals(table.to_batches()[0], tax)
    assert ev.to_pylist()[0] == {"image_id": "im0", "class_id": 3, "source": "page_title", "weight": 1.0,
                                 "page_id": "p1", "ambiguity": 1, "n_named": 1, "direct": False}
    assert ev["source"].to_pylist()[1:] == ["my_source", "my_source"]
    assert ev["weight"].to_pylist()[1:] == [5.0, 5.0]


def test_chunked_and_dictionary_text(tax: Taxonomy) -> None:
    base = signals(["sea lion", None, "dog", "sea lion"] * 3)
    chunked = pa.concat_tables([base.slice(0, 5), base.slice(5)])
    as_dict = base.set_column(2, "text", base["text"].dictionary_encode())
    expected = match_signals(base, tax)
    assert match_signals(chunked, tax).equals(expected)
    assert match_signals(as_dict, tax).equals(expected)


def test_pickled_taxonomy_gives_the_same_evidence(tax: Taxonomy) -> None:
    table = signals(["sea lion", "crane", "basset hound dog"], keys=[None, "k_fish", None])
    assert match_signals(table, pickle.loads(pickle.dumps(tax))).equals(match_signals(table, tax))


def _reference(text: str | None, tax: Taxonomy) -> list[tuple[int, int, int]]:
    """Brute force: every n-gram span, maximal spans only, classes with min ambiguity, n_named."""
    if text is None:
        return []
    lex = tax.lexicon()
    words = normalize(text).split()
    spans = [(s, e) for s in range(len(words)) for e in range(s + 1, min(len(words), s + lex.max_words) + 1)
             if lex.classes_for(" ".join(words[s:e]))]
    kept = [(s, e) for s, e in spans if not any(a <= s and e <= b and (a, b) != (s, e) for a, b in spans)]
    best: dict[int, int] = {}
    for s, e in kept:
        ids = lex.classes_for(" ".join(words[s:e]))
        for c in ids:
            best[c] = min(best.get(c, len(ids)), len(ids))
    return [(c, best[c], len(best)) for c in sorted(best)]


def test_agrees_with_brute_force_on_default_taxonomy() -> None:
    tax = default_taxonomy()
    rng = random.Random(3)
    terms = tax.lexicon().terms()
    multi = [t for t in terms if t.count(" ") >= 2]
    texts: list[str | None] = []
    for _ in range(400):
        parts = [rng.choice(multi if rng.random() < 0.3 else terms) for _ in range(rng.randint(0, 4))]
        texts.append(None if rng.random() < 0.05 else " and ".join(parts) or "")
    for text in rng.sample(multi, 50):  # nested readings: a term inside a longer one
        texts.append(" ".join(text.split()[1:]) + " " + text)
    ev = match_signals(signals(texts), tax)
    got: dict[int, list[tuple[int, int, int]]] = {}
    for r in ev.to_pylist():
        got.setdefault(int(r["image_id"][2:]), []).append((r["class_id"], r["ambiguity"], r["n_named"]))
    for i, text in enumerate(texts):
        assert got.get(i, []) == _reference(text, tax), text
    assert np.mean([len(v) for v in got.values()]) > 1
