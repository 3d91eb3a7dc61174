import importlib.util
import sys
from pathlib import Path

import pytest

from labeling.taxonomy import default_taxonomy
from labeling.wordnet import (
    LEMMAS_FILE,
    SYNSETS_FILE,
    WordNetError,
    build_from_wordnet,
    build_with_report,
    default_timm_info_dir,
    parse_data_noun,
)

# A WordNet-format excerpt: licence header lines (two leading spaces), synonyms with underscores, a verb
# pointer (+) and hyponym pointers (~) that must be ignored, an instance hypernym (@i), two out-of-set
# intermediates (physical_entity, domestic_animal, device) to walk through, and a synset with two
# hypernyms (dog: domestic_animal -> animal, and canine).
DATA_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by  \n\
  2 Princeton University under the following license.  \n\
  3   \n\
00001740 03 n 01 entity 0 001 ~ 00002000 n 0000 | that which exists  \n\
00002000 03 n 01 physical_entity 0 002 @ 00001740 n 0000 ~ 00003000 n 0000 | a physical entity  \n\
00003000 05 n 02 animal 0 beast 0 002 @ 00002000 n 0000 ~ 00004000 n 0000 | a living organism  \n\
00004000 05 n 01 domestic_animal 0 002 @ 00003000 n 0000 ~ 00005000 n 0000 | an animal kept by people  \n\
00005000 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 004 @ 00004000 n 0000 @ 00006000 n 0000 \
+ 01234567 v 0101 ~ 00007000 n 0000 | a member of the genus Canis  \n\
00006000 05 n 01 canine 0 002 @ 00003000 n 0000 ~ 00005000 n 0000 | a carnivore  \n\
00007000 18 n 01 Lassie 0 001 @i 00005000 n 0000 | a famous collie  \n\
00008000 05 n 01 crane 0 001 @ 00003000 n 0000 | a large long-necked wading bird  \n\
00009000 06 n 01 crane 0 001 @ 00009500 n 0000 | lifts and moves heavy objects  \n\
00009500 06 n 01 device 0 001 @ 00002000 n 0000 | an instrumentality  \n\
"""

# Class order is the file's, deliberately not sorted; n00099999 is not in WordNet.
SYNSETS = [
    "n00005000",
    "n00001740",
    "n00003000",
    "n00006000",
    "n00007000",
    "n00008000",
    "n00009000",
    "n00099999",
]
LEMMAS = """\
n00001740\tentity
n00003000\tanimal, animate being, beast
n00005000\tdog, domestic dog, Canis familiaris, dog
n00007000\tLassie
n00008000\tcrane
n00009000\tcrane
n00099999\tunicorn
n00123456\tnot in the synset list
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "data.noun").write_text(DATA_NOUN)
    (tmp_path / "synsets.txt").write_text("\n".join(SYNSETS) + "\n")
    (tmp_path / "lemmas.txt").write_text(LEMMAS)
    return tmp_path / "synsets.txt", tmp_path / "lemmas.txt", tmp_path / "wn"


def test_parse_data_noun(files: tuple[Path, Path, Path]) -> None:
    synsets = parse_data_noun(files[2] / "data.noun")
    assert len(synsets) == 10
    assert synsets["n00005000"].words == ("dog", "domestic dog", "Canis familiaris")
    assert synsets["n00005000"].hypernyms == ("n00004000", "n00006000")
    assert synsets["n00007000"].hypernyms == ("n00005000",)
    assert synsets["n00001740"].hypernyms == ()


def test_build(files: tuple[Path, Path, Path]) -> None:
    build = build_with_report(*files)
    tax = build.taxonomy
    assert list(tax.keys) == SYNSETS
    by_key = {k: i for i, k in enumerate(SYNSETS)}

    def parents(key: str) -> list[str]:
        return sorted(tax.keys[tax.parents(by_key[key])])

    assert parents("n00001740") == []
    assert parents("n00003000") == ["n00001740"]  # through physical_entity
    assert parents("n00005000") == ["n00003000", "n00006000"]  # both paths' nearest, deduplicated
    assert parents("n00006000") == ["n00003000"]
    assert parents("n00007000") == ["n00005000"]  # instance hypernym
    assert parents("n00009000") == ["n00001740"]  # through device and physical_entity
    assert parents("n00099999") == []
    assert build.missing_from_wordnet == ["n00099999"]
    assert build.names_from_wordnet == ["n00006000"]
    dog = by_key["n00005000"]
    assert tax.names[dog] == "dog" and tax.synonyms(dog) == ["domestic dog", "Canis familiaris"]
    assert tax.names[by_key["n00006000"]] == "canine"
    assert tax.names[by_key["n00099999"]] == "unicorn"
    assert tax.lexicon().classes_for("cranes") == (5, 6)
    assert tax.lexicon().classes_for("beast") == (2,)
    assert tax.ancestors(by_key["n00007000"]).tolist() == sorted(by_key[k] for k in SYNSETS[:4])
    assert build_from_wordnet(*files) == tax


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s, lem, wn: (wn / "data.noun").unlink(), r"^data.noun: file not found: "),
        (lambda s, lem, wn: lem.unlink(), r"^lemmas: file not found: "),
        (lambda s, lem, wn: s.write_text("n00001740\nnope\n"), r"^synsets: line 2: bad synset id 'nope'"),
        (lambda s, lem, wn: s.write_text("n00001740\nn00001740\n"), r"^synsets: line 2: duplicate synset id"),
        (lambda s, lem, wn: s.write_text("\n"), r"^synsets: no ids in "),
        (lambda s, lem, wn: lem.write_text("n00001740 entity\n"), r"^lemmas: line 1: want 'nXXXXXXXX<TAB>"),
        (
            lambda s, lem, wn: s.write_text("n00001740\nn00077777\nn00088888\n"),
            r"^synsets: 2 id\(s\) in neither WordNet nor the lemma file, e.g. n00077777$",
        ),
        (
            lambda s, lem, wn: (wn / "data.noun").write_text(DATA_NOUN + "00010000 05 n 01 broken\n"),
            r"^data.noun: line 14: not a WordNet synset line",
        ),
    ],
)
def test_errors(files: tuple[Path, Path, Path], edit, message: str) -> None:
    edit(*files)
    with pytest.raises(WordNetError, match=message) as info:
        build_with_report(*files)
    assert "\n" not in str(info.value)


def test_timm_info_dir_without_importing_timm() -> None:
    assert default_timm_info_dir("no_such_package_webjft") is None
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm not installed")
    was_imported = "timm" in sys.modules
    info = default_timm_info_dir()
    assert info is not None and (info / SYNSETS_FILE).is_file() and (info / LEMMAS_FILE).is_file()
    assert ("timm" in sys.modules) == was_imported


WORDNET = Path("/usr/share/wordnet")


@pytest.mark.skipif(
    not (WORDNET / "data.noun").is_file() or default_timm_info_dir() is None,
    reason="needs WordNet 3.0 (Debian wordnet-base) and timm",
)
def test_committed_default_is_reproducible() -> None:
    info = default_timm_info_dir()
    build = build_with_report(info / SYNSETS_FILE, info / LEMMAS_FILE, WORDNET)
    assert build.missing_from_wordnet == [] and build.names_from_wordnet == []
    assert build.taxonomy == default_taxonomy()
