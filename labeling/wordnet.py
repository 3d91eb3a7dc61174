"""Build the default taxonomy: ImageNet-21k synsets arranged by WordNet 3.0 noun hypernyms.

Inputs are plain files so that nothing heavy is imported: timm's ImageNet-21k synset list (class order) and
synset-to-lemma list (names), and WordNet's ``data.noun``. An ImageNet id ``nXXXXXXXX`` is ``n`` + the 8-digit
WordNet 3.0 noun offset.

A class's parents are its nearest hypernym ancestors that are themselves ImageNet classes: the walk goes up
through ``@`` (hypernym) and ``@i`` (instance hypernym) pointers, passes through synsets outside the set, and
stops on each path at the first one inside it. Several paths may give several parents; all are kept.

Decision on ids that WordNet 3.0 lacks: they become roots, named from the lemma file, and are listed in
``WordNetBuild.missing_from_wordnet`` (and logged) rather than failing the build; an id with neither a
WordNet entry nor a lemma is an error, since the class would have no name.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from labeling.taxonomy import TAXONOMY_SCHEMA, Taxonomy

__all__ = [
    "SYNSETS_FILE",
    "LEMMAS_FILE",
    "Synset",
    "WordNetBuild",
    "WordNetError",
    "build_from_wordnet",
    "build_with_report",
    "default_timm_info_dir",
    "parse_data_noun",
]

SYNSETS_FILE = "imagenet21k_goog_synsets.txt"
LEMMAS_FILE = "imagenet_synset_to_lemma.txt"
HYPERNYM_POINTERS = frozenset({"@", "@i"})

_ID = re.compile(r"n\d{8}")
log = logging.getLogger(__name__)


class WordNetError(ValueError):
    """An input file is missing or malformed; one line naming the file."""


@dataclass(frozen=True)
class Synset:
    """What the builder needs of one WordNet noun synset."""

    words: tuple[str, ...]
    hypernyms: tuple[str, ...]


@dataclass(frozen=True)
class WordNetBuild:
    """The built taxonomy and what the build had to work around."""

    taxonomy: Taxonomy
    missing_from_wordnet: list[str] = field(default_factory=list)
    names_from_wordnet: list[str] = field(default_factory=list)


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise WordNetError(f"{what}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WordNetError(f"{what}: cannot read {path}: {exc}") from None


def parse_data_noun(path: Path) -> dict[str, Synset]:
    """WordNet ``data.noun`` -> {``n``+offset: Synset}; license lines (two leading spaces) are skipped.

    Line format: ``offset lex_filenum ss_type w_cnt(hex) [word lex_id]...
    p_cnt [symbol offset pos source/target]... | gloss``.
    """
    synsets: dict[str, Synset] = {}
    for lineno, line in enumerate(_read_lines(path, "data.noun"), 1):
        if not line.strip() or line.startswith("  "):
            continue
        try:
            fields = line.split(" | ", 1)[0].split()
            w_cnt = int(fields[3], 16)
            words = tuple(w.replace("_", " ") for w in fields[4 : 4 + 2 * w_cnt : 2])
            p_at = 4 + 2 * w_cnt
            p_cnt = int(fields[p_at])
            pointers = fields[p_at + 1 : p_at + 1 + 4 * p_cnt]
            if len(pointers) != 4 * p_cnt or len(words) != w_cnt or not w_cnt:
                raise ValueError("truncated")
            hypernyms = tuple(
                f"n{pointers[i + 1]}"
                for i in range(0, len(pointers), 4)
                if pointers[i] in HYPERNYM_POINTERS and pointers[i + 2] == "n"
            )
        except (IndexError, ValueError):
            raise WordNetError(
                f"data.noun: line {lineno}: not a WordNet synset line: {line[:60]!r}"
            ) from None
        synsets[f"n{fields[0]}"] = Synset(words, hypernyms)
    if not synsets:
        raise WordNetError(f"data.noun: no synsets in {path}")
    return synsets


def _read_synsets(path: Path) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(_read_lines(path, "synsets"), 1):
        sid = line.strip()
        if not sid:
            continue
        if not _ID.fullmatch(sid):
            raise WordNetError(f"synsets: line {lineno}: bad synset id {sid!r} (want n + 8 digits)")
        if sid in seen:
            raise WordNetError(f"synsets: line {lineno}: duplicate synset id {sid}")
        seen.add(sid)
        ids.append(sid)
    if not ids:
        raise WordNetError(f"synsets: no ids in {path}")
    return ids


def _read_lemmas(path: Path) -> dict[str, list[str]]:
    lemmas: dict[str, list[str]] = {}
    for lineno, line in enumerate(_read_lines(path, "lemmas"), 1):
        if not line.strip():
            continue
        sid, sep, rest = line.partition("\t")
        if not sep or not _ID.fullmatch(sid.strip()):
            raise WordNetError(f"lemmas: line {lineno}: want 'nXXXXXXXX<TAB>lemma, lemma', got {line[:60]!r}")
        names = [w.strip() for w in rest.split(",") if w.strip()]
        if names:
            lemmas[sid.strip()] = names
    return lemmas


def _nearest_in_set(start: str, synsets: dict[str, Synset], in_set: dict[str, int]) -> list[int]:
    """Class ids of the first in-set synset on every hypernym path up from ``start`` (iterative walk)."""
    found: set[int] = set()
    seen: set[str] = set()
    stack = list(synsets[start].hypernyms) if start in synsets else []
    while stack:
        sid = stack.pop()
        if sid in seen:
            continue
        seen.add(sid)
        if sid in in_set:
            found.add(in_set[sid])
        elif sid in synsets:
            stack.extend(synsets[sid].hypernyms)
    return sorted(found)


def build_with_report(synsets_path: Path, lemmas_path: Path, wordnet_dir: Path) -> WordNetBuild:
    """Build the taxonomy and report ids missing from WordNet and names that had to come from WordNet."""
    ids = _read_synsets(Path(synsets_path))
    lemmas = _read_lemmas(Path(lemmas_path))
    synsets = parse_data_noun(Path(wordnet_dir) / "data.noun")
    in_set = {sid: i for i, sid in enumerate(ids)}

    missing = [sid for sid in ids if sid not in synsets]
    unnamed = [sid for sid in missing if sid not in lemmas]
    if unnamed:
        raise WordNetError(
            f"synsets: {len(unnamed)} id(s) in neither WordNet nor the lemma file, e.g. {unnamed[0]}"
        )
    if missing:
        log.warning("%d ImageNet id(s) not in WordNet 3.0 kept as roots, e.g. %s", len(missing), missing[0])

    from_wordnet: list[str] = []
    names: list[str] = []
    synonyms: list[list[str]] = []
    parents: list[list[int]] = []
    for sid in ids:
        words = lemmas.get(sid)
        if words is None:
            words = list(synsets[sid].words)
            from_wordnet.append(sid)
        names.append(words[0])
        synonyms.append(list(dict.fromkeys(w for w in words[1:] if w != words[0])))
        parents.append(_nearest_in_set(sid, synsets, in_set))

    table = pa.table(
        [
            pa.array(np.arange(len(ids), dtype=np.int32)),
            pa.array(ids, pa.string()),
            pa.array(names, pa.string()),
            pa.array(synonyms, pa.list_(pa.string())),
            pa.array(parents, pa.list_(pa.int32())),
        ],
        schema=TAXONOMY_SCHEMA,
    )
    return WordNetBuild(Taxonomy.from_table(table), missing, from_wordnet)


def build_from_wordnet(synsets_path: Path, lemmas_path: Path, wordnet_dir: Path) -> Taxonomy:
    """The ImageNet classes of ``synsets_path``, in file order, linked by WordNet hypernyms."""
    return build_with_report(synsets_path, lemmas_path, wordnet_dir).taxonomy


def default_timm_info_dir(package: str = "timm") -> Path | None:
    """timm's ``data/_info`` folder holding both ImageNet lists, found without importing timm (or torch)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        info = Path(location) / "data" / "_info"
        if (info / SYNSETS_FILE).is_file() and (info / LEMMAS_FILE).is_file():
            return info
    return None
