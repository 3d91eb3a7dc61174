import random

import pyarrow as pa
import pytest

from labeling.text import normalize, normalize_array, tokens


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dog", "dog"),
        ("GERMAN Shepherd", "german shepherd"),
        ("  hot-dog!!  on   a bun?? ", "hot dog on a bun"),
        ("Café Crème", "cafe creme"),
        ("ﬁsh", "fish"),
        ("Dog's toys", "dog toy"),
        ("jack-o'-lantern", "jack o lantern"),
        ("dogs", "dog"),
        ("puppies", "puppy"),
        ("cookies", "cooky"),
        ("cookie", "cooky"),
        ("pies", "pie"),
        ("ties", "tie"),
        ("glasses", "glass"),
        ("glass", "glass"),
        ("boxes", "box"),
        ("benches", "bench"),
        ("dishes", "dish"),
        ("cactus", "cactus"),
        ("bus", "bus"),
        ("gas", "gas"),
        ("cats dogs", "cat dog"),
        ("Hot Dogs & Beagles", "hot dog beagle"),
        ("1990s", "1990"),
        ("R2-D2", "r2 d2"),
        ("mice", "mice"),
        ("naïve FAÇADE", "naive facade"),
        ("Ｆｕｌｌ\u3000width", "full width"),
        ("Москва", "москва"),
        ("कुत्ता!", "कुत्ता"),  # vowel signs and virama are part of the word, not accents
        ("", ""),
        ("!!!", ""),
    ],
)
def test_normalize_cases(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_nulls_stay_null_and_chunked_input() -> None:
    arr = pa.chunked_array([["Dogs", None], ["", "Glasses"]])
    assert normalize_array(arr).to_pylist() == ["dog", None, "", "glass"]


@pytest.mark.parametrize("typ", [pa.large_string(), pa.string_view(), pa.dictionary(pa.int32(), pa.string())])
def test_other_string_types(typ: pa.DataType) -> None:
    arr = pa.array(["Cranes", None, "cranes"]).cast(typ)
    assert normalize_array(arr).to_pylist() == ["crane", None, "crane"]


def test_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="expects strings"):
        normalize_array(pa.array([1, 2]))


def test_null_type_array() -> None:
    assert normalize_array(pa.nulls(2)).to_pylist() == [None, None]


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces = [
        "dog",
        "s",
        "ies",
        "ie",
        "es",
        "sses",
        "ch",
        "x",
        "us",
        "é",
        "Ö",
        "'",
        "-",
        " ",
        "  ",
        ",",
        "A",
        "b",
    ]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def test_ascii_and_unicode_paths_agree() -> None:
    # An all-ASCII array takes a cheaper separator pattern; a mixed one the Unicode one. Same results.
    texts = ["Hot-Dogs, (boxes)!", 'a_b\tc\n"d"', "~x~ 42s"]
    assert (
        normalize_array(pa.array(texts)).to_pylist()
        == normalize_array(pa.array([*texts, "é"])).to_pylist()[:3]
    )


def test_scalar_and_array_agree_and_are_idempotent() -> None:
    texts = _random_texts(400, seed=1)
    once = normalize_array(pa.array(texts)).to_pylist()
    assert once == [normalize(t) for t in texts]
    assert normalize_array(pa.array(once)).to_pylist() == once
    for out in once:
        assert out == out.strip() and "  " not in out


def test_tokens() -> None:
    assert tokens("Two  Basset-Hounds, sleeping.") == ["two", "basset", "hound", "sleeping"]
    assert tokens("") == []
