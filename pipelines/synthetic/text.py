"""Turning "this signal names class c" into web-like text, vectorised with Arrow.

A class is named by any of its terms (name or synonym, chosen uniformly), so homonyms ("crane",
"mouse", "bass") and multi-word names reach the text exactly as the taxonomy spells them. Templates
add filler words; a template whose filler itself names a taxonomy class is dropped, so the only classes
in a text are the ones the generator meant (plus the homonym readings of the chosen term).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeling.taxonomy import Taxonomy

# "{}" is where the class term goes. Fillers are checked against the taxonomy at run time.
TEMPLATES: dict[str, list[str]] = {
    "alt_text": ["{}", "photo of the {}", "{} photo", "close-up of the {}", "{}, free photo",
                 "my {} yesterday", "{} in the wild", "the {} on the left"],
    "page_title": ["{} - photos and facts", "All about the {} | Wiki", "Amazing {} photos",
                   "{}: tips and info", "The {} blog", "{} for sale online", "Cheap {} reviews"],
    "surrounding_text": ["we took this {} last summer and loved it", "read more about the {} below",
                         "the {} is shown here next to other things", "click to learn about {} care",
                         "comments about the {} are welcome", "this is not really about {}"],
    "anchor_text": ["{}", "see {}", "more {} photos", "{} here", "read about {}"],
    "query_click": ["{}", "{} photos", "cute {}", "{} wallpaper hd", "what is the {}", "funny {}"],
}
NO_CLASS_TEMPLATES: dict[str, list[str]] = {
    "alt_text": ["IMG_{}", "DSC{}.JPG", "untitled {}", "thumbnail {}", "photo {}"],
    "surrounding_text": ["posted on {} by admin", "share this on social media {}", "click for more {}"],
    "anchor_text": ["click here {}", "next {}", "download {}"],
}


@dataclass(frozen=True)
class TermTable:
    """All terms of all classes, flattened, with a CSR index by class."""

    terms: pa.Array  # string
    offsets: np.ndarray  # int64, len n_classes + 1
    term_class: np.ndarray  # int32: the class each term belongs to

    @classmethod
    def from_taxonomy(cls, taxonomy: Taxonomy) -> TermTable:
        table = taxonomy.to_table()
        names = table.column("name").combine_chunks()
        synonyms = table.column("synonyms").combine_chunks()
        per_class = pc.list_value_length(synonyms).fill_null(0).to_numpy(zero_copy_only=False) + 1
        offsets = np.zeros(len(per_class) + 1, dtype=np.int64)
        np.cumsum(per_class, out=offsets[1:])
        flat_synonyms = pc.list_flatten(synonyms).to_numpy(zero_copy_only=False)
        terms = np.empty(offsets[-1], dtype=object)
        name_positions = offsets[:-1]
        terms[name_positions] = names.to_numpy(zero_copy_only=False)
        synonym_mask = np.ones(offsets[-1], dtype=bool)
        synonym_mask[name_positions] = False
        terms[synonym_mask] = flat_synonyms
        term_class = np.repeat(np.arange(len(per_class), dtype=np.int32), per_class)
        return cls(pa.array(terms, type=pa.string()), offsets, term_class)

    def pick(self, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random term index for each class."""
        counts = self.offsets[classes + 1] - self.offsets[classes]
        return self.offsets[classes] + (rng.random(len(classes)) * counts).astype(np.int64)


def usable_templates(taxonomy: Taxonomy, templates: list[str]) -> list[str]:
    """Templates whose own words name no taxonomy class."""
    lexicon = taxonomy.lexicon()
    kept = [t for t in templates if not lexicon.find(t.replace("{}", " 1234 "))]
    if not kept:
        raise ValueError(f"every template names a taxonomy class: {templates}")
    return kept


def fill(templates: list[str], template_index: np.ndarray, words: pa.Array) -> pa.Array:
    """Vectorised `templates[i].format(word)` for each row."""
    heads = pa.array([t.split("{}", 1)[0] for t in templates], type=pa.string())
    tails = pa.array([t.split("{}", 1)[1] for t in templates], type=pa.string())
    index = pa.array(template_index.astype(np.int32))
    return pc.binary_join_element_wise(pc.take(heads, index), words, pc.take(tails, index), "")


def stuffed(term_table: TermTable, term_rows: list[np.ndarray]) -> pa.Array:
    """Keyword-stuffed spam texts: many class terms joined by commas."""
    return pa.array([", ".join(term_table.terms.take(pa.array(rows)).to_pylist()) for rows in term_rows],
                    type=pa.string())
