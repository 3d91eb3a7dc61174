"""Text normalisation shared by taxonomy terms and crawl text.

Matching only works if both sides go through the very same rules, so there is one implementation,
vectorised with pyarrow.compute (crawl text arrives as Arrow batches); ``normalize`` for one string calls
it on a one-element array.

The rules, in order:

1. Unicode NFKD, drop the diacritics (the combining-diacritic blocks), recompose (NFC): ``Café`` -> ``Cafe``,
   ligatures and full-width forms unfolded; marks that are part of a script (Devanagari vowel signs) stay.
2. Lower case.
3. Drop apostrophes (``dog's`` -> ``dogs``, ``jack-o'-lantern`` -> ``jack-o-lantern``).
4. Every run of characters that are not letters, marks or digits becomes one space; no leading/trailing
   spaces.
5. Fold plurals word by word (words of 4+ characters), a deliberately small set of suffix rules:

   - ``-ies`` -> ``-y`` in words of 5+ chars (``puppies`` -> ``puppy``; ``pies`` -> ``pie`` by the last rule);
   - ``-ie`` -> ``-y`` (``cookie`` -> ``cooky``), so that ``cookie`` and ``cookies`` meet;
   - ``-sses`` -> ``-ss`` (``glasses`` -> ``glass``);
   - ``-ches``/``-shes``/``-xes`` -> ``-ch``/``-sh``/``-x`` (``benches`` -> ``bench``, ``boxes`` -> ``box``);
   - a final ``s`` after anything but ``s`` or ``u`` goes (``dogs`` -> ``dog``; ``glass``, ``cactus`` and
     three-letter words such as ``bus`` stay).

   Irregular plurals (mice, geese, wolves, feet) are not folded. The result is a match key, not display text;
   the rules are idempotent, so normalising a normalised string changes nothing.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["PLURAL_RULES", "normalize", "normalize_array", "tokens"]

# (RE2 pattern, replacement). Words are separated by single spaces when these run, so a word's end is
# "( |$)"; the captured separator is put back. Leading "[^ ]" classes set the minimum word length.
PLURAL_RULES: tuple[tuple[str, str], ...] = (
    (r"([^ ]{2})ies( |$)", r"\1y\2"),
    (r"([^ ]{2})ie( |$)", r"\1y\2"),
    (r"([^ ])sses( |$)", r"\1ss\2"),
    (r"([^ ](?:ch|sh|x))es( |$)", r"\1\2"),
    (r"([^ ]{2}[^ su])s( |$)", r"\1\2"),
)

_APOSTROPHES = "['\u2019\u02bc]"
# Combining Diacritical Marks (+ Extended, Supplement, for Symbols) and Half Marks. Explicit ranges, not
# \p{Mn}: that would also strip script-essential marks, and Unicode classes cost RE2 ~1 ms to compile
# per call.
_DIACRITICS = r"[\x{0300}-\x{036F}\x{1AB0}-\x{1AFF}\x{1DC0}-\x{1DFF}\x{20D0}-\x{20FF}\x{FE20}-\x{FE2F}]+"
_NON_ALNUM = r"[^\p{L}\p{M}\p{N}]+"
# The same class restricted to ASCII input (after lower-casing), so that all-ASCII arrays, such as the single
# strings of ``normalize``, skip compiling the Unicode class; results are identical.
_ASCII_NON_ALNUM = r"[^a-z0-9]+"


def normalize_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Normalise every string of an Arrow array (nulls stay null), fully vectorised."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if pa.types.is_dictionary(texts.type):
        texts = texts.dictionary_decode()
    if pa.types.is_null(texts.type):
        return texts.cast(pa.string())
    if not (
        pa.types.is_string(texts.type)
        or pa.types.is_large_string(texts.type)
        or pa.types.is_string_view(texts.type)
    ):
        raise TypeError(f"normalize_array expects strings, got {texts.type}")
    if pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.string())
    ascii_only = pc.all(pc.string_is_ascii(texts)).as_py() is not False
    out = texts
    if not ascii_only:
        out = pc.utf8_normalize(out, form="NFKD")
        out = pc.replace_substring_regex(out, _DIACRITICS, "")
        out = pc.utf8_normalize(out, form="NFC")
    out = pc.utf8_lower(out)
    out = pc.replace_substring_regex(out, _APOSTROPHES, "")
    out = pc.replace_substring_regex(out, _ASCII_NON_ALNUM if ascii_only else _NON_ALNUM, " ")
    out = pc.utf8_trim(out, characters=" ")
    for pattern, replacement in PLURAL_RULES:
        out = pc.replace_substring_regex(out, pattern, replacement)
    return out


@functools.lru_cache(maxsize=1 << 16)
def normalize(text: str) -> str:
    """Normalise one string with exactly the rules of :func:`normalize_array` (cached: terms repeat)."""
    return normalize_array(pa.array([text], pa.string()))[0].as_py()


def tokens(text: str) -> list[str]:
    """The normalised words of ``text``."""
    return normalize(text).split()
