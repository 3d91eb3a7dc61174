import pickle
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from labeling.taxonomy import TAXONOMY_SCHEMA, Taxonomy, TaxonomyError, default_taxonomy

# A small DAG with a diamond (dog, cat under animal and pet), a shortcut (basset hound is also a pet, so
# its shortest path to a root is 1 although hound -> dog -> animal is longer) and a homonym (crane).
ROWS = [
    (0, "k_animal", "animal", ["beast"], []),
    (1, "k_pet", "pet", [], []),
    (2, "k_dog", "dog", ["domestic dog"], [0, 1]),
    (3, "k_cat", "cat", ["house cat"], [0, 1]),
    (4, "k_beagle", "beagle", [], [2]),
    (5, "k_hound", "hound", ["hound dog"], [2]),
    (6, "k_basset", "basset hound", ["basset"], [5, 1]),
    (7, "k_crane_bird", "crane", [], [0]),
    (8, "k_machine", "machine", [], []),
    (9, "k_crane_machine", "Crane", ["tower crane"], [8]),
]


def make_table(rows=ROWS, schema=TAXONOMY_SCHEMA) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in range(5)]
    return pa.table([pa.array(list(c), f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    shuffled = list(ROWS)
    random.Random(3).shuffle(shuffled)
    return Taxonomy.from_table(make_table(shuffled))


# ---------------------------------------------------------------------------------------------- hierarchy


def test_basic_accessors(tax: Taxonomy) -> None:
    assert len(tax) == 10
    assert list(tax.keys[:3]) == ["k_animal", "k_pet", "k_dog"]
    assert tax.names[6] == "basset hound"
    assert tax.synonyms(2) == ["domestic dog"]
    assert tax.synonyms(1) == []
    assert tax.id_of("k_hound") == 5
    assert "k_hound" in tax and "nope" not in tax
    with pytest.raises(KeyError, match="unknown class key 'nope'"):
        tax.id_of("nope")
    with pytest.raises(IndexError, match="out of range"):
        tax.parents(10)
    with pytest.raises(IndexError):
        tax.parents(-1)


def test_hierarchy(tax: Taxonomy) -> None:
    assert tax.parents(6).tolist() == [5, 1]
    assert tax.parents(6).dtype == np.int32
    assert tax.children(2).tolist() == [4, 5]
    assert tax.children(1).tolist() == [2, 3, 6]
    assert tax.roots().tolist() == [0, 1, 8]
    assert tax.leaves().tolist() == [3, 4, 6, 7, 9]
    assert tax.is_leaf(4) and not tax.is_leaf(2)
    assert tax.ancestors(6).tolist() == [0, 1, 2, 5]
    assert tax.ancestors(0).tolist() == []
    assert tax.descendants(0).tolist() == [2, 3, 4, 5, 6, 7]
    assert tax.descendants(1).tolist() == [2, 3, 4, 5, 6]
    assert tax.descendants(4).tolist() == []
    assert tax.siblings(2).tolist() == [3, 6, 7]
    assert tax.siblings(9).tolist() == []
    assert tax.siblings(0).tolist() == []


def test_depth_is_shortest_path(tax: Taxonomy) -> None:
    assert tax.depths().tolist() == [0, 0, 1, 1, 2, 2, 1, 1, 0, 1]
    assert tax.depth(6) == 1
    assert tax.root_path(6).tolist() == [1, 6]
    assert tax.root_path(4).tolist() == [0, 2, 4]


def test_immutable(tax: Taxonomy) -> None:
    with pytest.raises(AttributeError):
        tax.foo = 1
    with pytest.raises(ValueError):
        tax.parents(2)[0] = 5
    with pytest.raises(ValueError):
        tax.depths()[0] = 5
    with pytest.raises(TypeError):
        Taxonomy()


def test_round_trip(tax: Taxonomy) -> None:
    table = tax.to_table()
    assert table.schema == TAXONOMY_SCHEMA
    assert table.column("class_id").to_pylist() == list(range(10))
    assert table.to_pylist() == make_table().to_pylist()
    assert Taxonomy.from_table(table) == tax


def test_accepts_castable_types() -> None:
    schema = pa.schema(
        [
            ("parents", pa.large_list(pa.int64())),
            ("class_id", pa.int64()),
            ("key", pa.large_string()),
            ("name", pa.dictionary(pa.int8(), pa.string())),
            ("synonyms", pa.large_list(pa.large_string())),
            ("extra", pa.float64()),
        ]
    )
    rows = [(list(r[4]), r[0], r[1], r[2], list(r[3]), 1.0) for r in ROWS]
    table = make_table(rows, schema)
    # Null lists are read as empty.
    table = table.set_column(
        4, "synonyms", pa.array([None, *[r[3] for r in ROWS[1:]]], pa.list_(pa.string()))
    )
    loaded = Taxonomy.from_table(table)
    assert loaded.to_table().schema == TAXONOMY_SCHEMA
    assert loaded.synonyms(0) == []
    assert loaded.parents(6).tolist() == [5, 1]


def test_null_typed_list_columns_are_empty_lists() -> None:
    table = make_table().set_column(3, "synonyms", pa.nulls(10)).set_column(4, "parents", pa.nulls(10))
    loaded = Taxonomy.from_table(table)
    assert loaded.roots().tolist() == list(range(10)) and loaded.synonyms(2) == []


def test_pickles_for_workers(tax: Taxonomy) -> None:
    again = pickle.loads(pickle.dumps(tax))
    assert again == tax and again.ancestors(6).tolist() == [0, 1, 2, 5]
    lex = pickle.loads(pickle.dumps(tax.lexicon()))
    assert lex.classes_for("cranes") == (7, 9) and lex.find("tower crane") == tax.lexicon().find(
        "tower crane"
    )


def test_empty_taxonomy() -> None:
    empty = Taxonomy.from_table(TAXONOMY_SCHEMA.empty_table())
    assert len(empty) == 0 and empty.roots().tolist() == [] and empty.lexicon().max_words == 0
    assert empty.lexicon().find_array(pa.array(["dog"])).num_rows == 0


# ---------------------------------------------------------------------------------------------- errors


def _with(rows_change):
    rows = [list(r) for r in ROWS]
    rows_change(rows)
    return make_table([tuple(r) for r in rows])


def _set(i, j, value):
    def change(rows):
        rows[i][j] = value

    return change


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_with(_set(3, 0, 17)), r"^class_id: not dense from 0 \(id 3 missing; 10 rows, max id 17\)$"),
        (_with(_set(3, 0, 2)), r"^class_id: duplicate id 2$"),
        (_with(_set(0, 0, -1)), r"^class_id: negative id -1$"),
        (_with(_set(3, 1, "k_dog")), r"^key: duplicate key k_dog$"),
        (_with(_set(3, 1, "")), r"^key: empty key for class_id 3$"),
        (_with(_set(3, 2, "")), r"^name: empty name for class_id 3$"),
        (_with(_set(4, 4, [2, 99999])), r"^parents: class_id 4 has unknown parent 99999$"),
        (_with(_set(4, 4, [-3])), r"^parents: class_id 4 has unknown parent -3$"),
        (_with(_set(5, 4, [5])), r"^parents: class_id 5 \(k_hound\) lists itself as a parent$"),
        (_with(_set(5, 4, [2, 2])), r"^parents: class_id 5 lists parent 2 twice$"),
        (_with(_set(0, 4, [4])), r"^parents: cycle through k_animal -> k_beagle -> k_dog -> k_animal$"),
        (_with(_set(8, 4, [9])), r"^parents: cycle through k_machine -> k_crane_machine -> k_machine$"),
    ],
)
def test_validation_errors(table: pa.Table, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message) as info:
        Taxonomy.from_table(table)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def _retyped(name: str, array: pa.Array) -> pa.Table:
    table = make_table()
    return table.set_column(table.schema.get_field_index(name), name, array)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (make_table().drop_columns(["parents"]), r"^parents: missing column"),
        (
            _retyped("class_id", pa.array([float(i) for i in range(10)])),
            r"^class_id: expected int32, got double$",
        ),
        (_retyped("key", pa.array(list(range(10)))), r"^key: expected string, got int64$"),
        (
            _retyped("parents", pa.array([["a"]] * 10)),
            r"^parents: expected list<item: int32>, got list<item: string>$",
        ),
        (_retyped("synonyms", pa.array([1] * 10)), r"^synonyms: expected list<item: string>, got int64$"),
        (
            _retyped("class_id", pa.array([2**40] + list(range(1, 10)))),
            r"^class_id: cannot cast int64 to int32",
        ),
        (
            _retyped("key", pa.array([None] + [f"k{i}" for i in range(1, 10)], pa.string())),
            r"^key: null at row 0$",
        ),
        (_retyped("parents", pa.array([[None]] + [[]] * 9, pa.list_(pa.int32()))), r"^parents: null parent"),
        (
            _retyped("synonyms", pa.array([[]] * 3 + [[None]] + [[]] * 6, pa.list_(pa.string()))),
            r"^synonyms: null",
        ),
    ],
)
def test_type_errors(table: pa.Table, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message) as info:
        Taxonomy.from_table(table)
    assert "\n" not in str(info.value)


def test_deep_chain_and_long_cycle_need_no_recursion() -> None:
    n = 5000
    rows = [(i, f"k{i}", f"class {i}", [], [i - 1] if i else []) for i in range(n)]
    chain = Taxonomy.from_table(make_table(rows))
    assert chain.depth(n - 1) == n - 1
    assert len(chain.ancestors(n - 1)) == n - 1
    rows[0] = (0, "k0", "class 0", [], [n - 1])
    with pytest.raises(TaxonomyError, match=r"^parents: cycle through k0 -> k4999 -> k4998 .* -> k0$"):
        Taxonomy.from_table(make_table(rows))


# ---------------------------------------------------------------------------------------------- lexicon


def test_lexicon(tax: Taxonomy) -> None:
    lex = tax.lexicon()
    assert lex is tax.lexicon()
    assert lex.classes_for("Cranes") == (7, 9)
    assert lex.classes_for("crane") == (7, 9)
    assert lex.is_ambiguous("CRANE") and not lex.is_ambiguous("dog")
    assert lex.classes_for("Hound Dogs") == (5,)
    assert lex.classes_for("basset") == (6,)
    assert lex.classes_for("unicorn") == ()
    assert lex.max_words == 2
    assert lex.n_ambiguous == 1
    assert lex.terms() == sorted(lex.terms())
    assert "tower crane" in lex.terms() and "crane" in lex
    table = lex.to_table()
    assert table.schema == pa.schema(
        [("term", pa.string()), ("class_ids", pa.list_(pa.int32())), ("n_words", pa.int32())]
    )
    crane = table.filter(pc.equal(table["term"], "crane")).to_pylist()
    assert crane == [{"term": "crane", "class_ids": [7, 9], "n_words": 1}]


def test_find(tax: Taxonomy) -> None:
    lex = tax.lexicon()
    found = lex.find("Two Basset-Hounds chasing a CRANE; the hound dog won.")
    assert found == [
        ("basset", (6,)),
        ("basset hound", (6,)),
        ("hound", (5,)),
        ("crane", (7, 9)),
        ("hound", (5,)),
        ("hound dog", (5,)),
        ("dog", (2,)),
    ]
    assert lex.find("") == [] and lex.find("nothing here") == []


def test_find_array_shape(tax: Taxonomy) -> None:
    out = tax.lexicon().find_array(pa.array(["a dog", None, "", "cranes and cats"]))
    assert out.schema == pa.schema([("row", pa.int64()), ("term", pa.string())])
    assert out.to_pylist() == [
        {"row": 0, "term": "dog"},
        {"row": 3, "term": "crane"},
        {"row": 3, "term": "cat"},
    ]
    assert tax.lexicon().find_array(["hound dog"]).column("term").to_pylist() == ["hound", "hound dog", "dog"]


def _random_texts(lex, n: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    words = sorted({w for t in lex.terms() for w in t.split()})
    multi = [t for t in lex.terms() if " " in t]
    fillers = ["the", "a", "photo", "of", "my", "and", "!", ",", "-", "  ", "IMG_001"]
    texts: list[str | None] = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 14)):
            r = rng.random()
            piece = rng.choice(multi) if r < 0.2 else rng.choice(words) if r < 0.6 else rng.choice(fillers)
            if rng.random() < 0.2:
                piece = piece.upper() + "s"
            parts.append(piece)
        texts.append(None if rng.random() < 0.03 else " ".join(parts))
    return texts


def _agree(lex, texts: list[str | None]) -> int:
    chunked = pa.chunked_array(
        [pa.array(texts[: len(texts) // 2], pa.string()), pa.array(texts[len(texts) // 2 :])]
    )
    table = lex.find_array(chunked)
    got: dict[int, list[str]] = {}
    for row, term in zip(table["row"].to_pylist(), table["term"].to_pylist(), strict=True):
        got.setdefault(row, []).append(term)
    for i, text in enumerate(texts):
        expected = [term for term, _ in lex.find(text)] if text is not None else []
        assert got.get(i, []) == expected, text
    for term, ids in lex.find(" ".join(t for t in texts[:50] if t)):
        assert ids == lex.classes_for(term) and ids
    return table.num_rows


def test_find_and_find_array_agree_small(tax: Taxonomy) -> None:
    assert _agree(tax.lexicon(), _random_texts(tax.lexicon(), 500, seed=7)) > 100


def test_find_and_find_array_agree_default() -> None:
    lex = default_taxonomy().lexicon()
    assert _agree(lex, _random_texts(lex, 1500, seed=11)) > 1000


# ---------------------------------------------------------------------------------------------- default


@pytest.fixture(scope="module")
def default() -> Taxonomy:
    return default_taxonomy()


def test_default_shape(default: Taxonomy) -> None:
    assert default is default_taxonomy()
    assert len(default) == 21843
    stats = default.stats()
    assert stats["classes"] == 21843 and stats["edges"] >= 21843 - stats["roots"]
    assert (default.depths() >= 0).all()  # every class reaches a root: a DAG with no orphan cycle
    assert default.keys[0] == "n00004475" and default.names[0] == "organism"


def test_default_known_facts(default: Taxonomy) -> None:
    dog, beagle = default.id_of("n02084071"), default.id_of("n02088364")
    assert default.names[dog] == "dog" and default.names[beagle] == "beagle"
    assert dog in default.ancestors(beagle)
    assert beagle in default.descendants(dog)
    assert "Canis familiaris" in default.synonyms(dog)
    animal = default.id_of("n00015388")
    assert animal in default.ancestors(dog) and default.depth(dog) > default.depth(animal)


@pytest.mark.parametrize("term", ["crane", "mouse", "bat", "bass", "panther", "Cranes"])
def test_default_homonyms(default: Taxonomy, term: str) -> None:
    assert len(default.lexicon().classes_for(term)) > 1


def test_default_jaguar_is_one_synset(default: Taxonomy) -> None:
    # WordNet 3.0 has a single "jaguar" noun synset (the cat); "panther" is the ambiguous one.
    assert [default.keys[c] for c in default.lexicon().classes_for("jaguar")] == ["n02128925"]
    assert default.lexicon().classes_for("crane") == (default.id_of("n02012849"), default.id_of("n03126707"))


# ---------------------------------------------------------------------------------------------- bulk helpers


def test_find_array_positions(tax: Taxonomy) -> None:
    lex = tax.lexicon()
    texts = ["Two basset hounds; the hound dog", None, "", "a crane"]
    plain = lex.find_array(texts)
    out = lex.find_array(texts, positions=True)
    assert out.column_names == ["row", "term", "start", "n_words", "term_id"]
    assert out.select(["row", "term"]).equals(plain)
    rows = list(zip(out["term"].to_pylist(), out["start"].to_pylist(), out["n_words"].to_pylist(), strict=True))
    assert rows == [("basset", 1, 1), ("basset hound", 1, 2), ("hound", 2, 1), ("hound", 4, 1),
                    ("hound dog", 4, 2), ("dog", 5, 1), ("crane", 1, 1)]
    terms = lex.to_table()["term"].to_pylist()
    assert [terms[i] for i in out["term_id"].to_pylist()] == out["term"].to_pylist()
    normalized = lex.find_array(pa.array(["two basset hound"]), positions=True, normalized=True)
    assert normalized["start"].to_pylist() == [1, 1, 2]
    assert lex.find_array([None], positions=True).schema == out.schema


def test_term_classes(tax: Taxonomy) -> None:
    lex = tax.lexicon()
    off, ids = lex.term_classes()
    table = lex.to_table()
    for t, expected in enumerate(table["class_ids"].to_pylist()):
        assert ids[off[t] : off[t + 1]].tolist() == expected
    assert not off.flags.writeable and not ids.flags.writeable


def test_ids_of(tax: Taxonomy) -> None:
    got = tax.ids_of(pa.array(["k_hound", None, "nope", "k_animal", "k_hound"]))
    assert got.dtype == np.int32 and got.tolist() == [5, -1, -1, 0, 5]
    assert tax.ids_of(pa.chunked_array([["k_pet"], ["k_dog"]])).tolist() == [1, 2]
    assert tax.ids_of(pa.array(["k_dog", "k_pet"]).dictionary_encode()).tolist() == [2, 1]
    assert tax.ids_of(pa.array([None, None], pa.string())).tolist() == [-1, -1]
    assert tax.ids_of(pa.array([], pa.string())).tolist() == []


def test_ancestor_pairs(tax: Taxonomy) -> None:
    cls, anc = tax.ancestor_pairs()
    assert cls.dtype == np.int32 and anc.dtype == np.int32
    for c in tax:
        assert anc[cls == c].tolist() == tax.ancestors(c).tolist()
    assert list(zip(cls.tolist(), anc.tolist(), strict=True)) == sorted(zip(cls.tolist(), anc.tolist(), strict=True))
    again = pickle.loads(pickle.dumps(tax))
    assert [a.tolist() for a in again.ancestor_pairs()] == [cls.tolist(), anc.tolist()]
    assert [len(a) for a in Taxonomy.from_table(TAXONOMY_SCHEMA.empty_table()).ancestor_pairs()] == [0, 0]


def test_ancestor_pairs_default() -> None:
    tax = default_taxonomy()
    cls, anc = tax.ancestor_pairs()
    rng = random.Random(1)
    for c in rng.sample(range(len(tax)), 200):
        assert anc[cls == c].tolist() == tax.ancestors(c).tolist()
