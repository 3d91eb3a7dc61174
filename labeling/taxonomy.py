"""The class hierarchy: a validated, immutable DAG over dense class ids, plus its lexicon.

A taxonomy arrives as an Arrow table (DESIGN.md contract: ``class_id`` int32 dense from 0, ``key``, ``name``,
``synonyms`` list<string>, ``parents`` list<int32>). ``Taxonomy.from_table`` checks it once and builds CSR
arrays (parents, children) so that hierarchy queries are numpy gathers rather than Python graph walks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labeling.text import normalize, normalize_array

__all__ = [
    "DEFAULT_TAXONOMY_RESOURCE",
    "TAXONOMY_SCHEMA",
    "Lexicon",
    "Taxonomy",
    "TaxonomyError",
    "default_taxonomy",
    "read_parquet",
    "write_parquet",
]

TAXONOMY_SCHEMA = pa.schema(
    [
        ("class_id", pa.int32()),
        ("key", pa.string()),
        ("name", pa.string()),
        ("synonyms", pa.list_(pa.string())),
        ("parents", pa.list_(pa.int32())),
    ]
)

DEFAULT_TAXONOMY_RESOURCE = "data/imagenet21k_taxonomy.parquet"


class TaxonomyError(ValueError):
    """A taxonomy table breaks the contract; the message is one line naming the column first."""


# ---------------------------------------------------------------------------------------------- validation


def _is_str(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list_of(t: pa.DataType, pred: Any) -> bool:
    listy = (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )
    return listy and (pred(t.value_type) or pa.types.is_null(t.value_type))


def _column(table: pa.Table, name: str) -> pa.Array:
    """The column cast to its contract type, or a TaxonomyError saying why it can't be."""
    if name not in table.column_names:
        raise TaxonomyError(f"{name}: missing column (have {', '.join(table.column_names) or 'none'})")
    col = table.column(name)
    target = TAXONOMY_SCHEMA.field(name).type
    accept = {
        "class_id": pa.types.is_integer,
        "key": _is_str,
        "name": _is_str,
        "synonyms": lambda t: _is_list_of(t, _is_str),
        "parents": lambda t: _is_list_of(t, pa.types.is_integer),
    }[name]
    if not (accept(col.type) or (pa.types.is_null(col.type) and name in ("synonyms", "parents"))):
        raise TaxonomyError(f"{name}: expected {target}, got {col.type}")
    try:
        col = col.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaxonomyError(f"{name}: cannot cast {col.type} to {target}: {reason}") from None
    return col.combine_chunks()


def _first_true(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _flatten(lists: pa.Array, n: int) -> tuple[np.ndarray, pa.Array]:
    """CSR offsets (int64, length n+1) and flat values of a list array; null lists count as empty."""
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    return offsets, values


def gather_csr(offsets: np.ndarray, values: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Concatenated CSR rows ``values[offsets[v]:offsets[v+1]]`` for every v in ``nodes``, vectorised."""
    starts = offsets[nodes]
    lens = offsets[nodes + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return values[:0]
    before = np.cumsum(lens) - lens
    return values[np.repeat(starts - before, lens) + np.arange(total)]


def _find_cycle(unprocessed: np.ndarray, p_off: np.ndarray, p_val: np.ndarray) -> list[int]:
    """A cycle among nodes Kahn's sort could not order: every such node has an unordered parent."""
    node = int(np.flatnonzero(unprocessed)[0])
    seen: dict[int, int] = {}
    path: list[int] = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        ps = p_val[p_off[node] : p_off[node + 1]]
        node = int(ps[unprocessed[ps]][0])
    return path[seen[node] :] + [node]


def _cycle(n: int, p_off: np.ndarray, p_val: np.ndarray, c_off: np.ndarray, c_val: np.ndarray) -> list[int]:
    """A cycle (child -> parent -> ... -> child) or [] for a DAG.

    Kahn's topological sort, one DAG level per numpy step: no recursion, no per-node Python loop.
    """
    remaining = np.diff(p_off)
    processed = np.zeros(n, dtype=bool)
    frontier = np.flatnonzero(remaining == 0)
    while frontier.size:
        processed[frontier] = True
        kids = gather_csr(c_off, c_val, frontier)
        np.subtract.at(remaining, kids, 1)  # O(edges of this level), not O(n) per level
        kids = np.unique(kids)
        frontier = kids[remaining[kids] == 0]
    return [] if processed.all() else _find_cycle(~processed, p_off, p_val)


# ---------------------------------------------------------------------------------------------- lexicon

_FIND_SCHEMA = pa.schema([("row", pa.int64()), ("term", pa.string())])
_FIND_POSITIONS_SCHEMA = pa.schema(
    [*_FIND_SCHEMA, ("start", pa.int32()), ("n_words", pa.int32()), ("term_id", pa.int32())]
)


class Lexicon:
    """Normalised class names and synonyms -> the class ids each can mean.

    Homonyms stay ambiguous on purpose ("crane" the bird and the machine): deciding between them is the
    job of evidence scoring, not of the lexicon. Terms are match keys (see :mod:`labeling.text`).
    """

    __slots__ = ("_terms", "_off", "_ids", "_n_words", "_index", "_prefixes", "_term_array", "_grams")

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Taxonomy.lexicon()")

    @classmethod
    def _from_classes(cls, names: np.ndarray, s_off: np.ndarray, s_val: np.ndarray) -> Lexicon:
        n = len(names)
        texts = np.concatenate([names, s_val]).astype(object)
        owners = np.concatenate([np.arange(n), np.repeat(np.arange(n), np.diff(s_off))]).astype(np.int64)
        norm = np.asarray(
            normalize_array(pa.array(texts, pa.string())).to_numpy(zero_copy_only=False), dtype=object
        )
        keep = norm != ""
        norm, owners = norm[keep], owners[keep]
        terms, inverse = np.unique(norm, return_inverse=True) if len(norm) else (norm, owners)
        pairs = np.unique(inverse.astype(np.int64) * max(n, 1) + owners)
        term_idx, class_ids = np.divmod(pairs, max(n, 1))
        off = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_idx, minlength=len(terms)), out=off[1:])
        n_words = np.array([t.count(" ") + 1 for t in terms], dtype=np.int32)
        prefixes = set()
        for term in terms[n_words > 1]:
            words = term.split(" ")
            prefixes.update(" ".join(words[:k]) for k in range(1, len(words)))

        self = object.__new__(cls)
        self._terms = terms.tolist()
        self._off = off
        self._ids = class_ids.astype(np.int32)
        self._n_words = n_words
        self._index = {t: i for i, t in enumerate(self._terms)}
        self._prefixes = frozenset(prefixes)
        # One lookup per n-gram in find_array: (term index + 1) * 2, plus 1 when it is a prefix of a longer term.
        grams = dict.fromkeys(self._prefixes, 1)
        for i, t in enumerate(self._terms):
            grams[t] = grams.get(t, 0) + 2 * (i + 1)
        self._grams = grams
        self._term_array = pa.array(self._terms, pa.string())
        return self

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and normalize(term) in self._index

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} terms, {self.n_ambiguous} ambiguous, max {self.max_words} words)"

    def _ids_at(self, i: int) -> tuple[int, ...]:
        return tuple(self._ids[self._off[i] : self._off[i + 1]].tolist())

    def classes_for(self, term: str) -> tuple[int, ...]:
        """Every class ``term`` can name (ascending; empty when unknown); ``term`` is normalised first."""
        i = self._index.get(normalize(term))
        return () if i is None else self._ids_at(i)

    def is_ambiguous(self, term: str) -> bool:
        return len(self.classes_for(term)) > 1

    def terms(self) -> list[str]:
        """All normalised terms, sorted."""
        return list(self._terms)

    @property
    def max_words(self) -> int:
        """Words in the longest term: how long an n-gram of crawl text is worth looking up."""
        return int(self._n_words.max()) if len(self._n_words) else 0

    @property
    def n_ambiguous(self) -> int:
        """How many terms name more than one class (homonyms)."""
        return int((np.diff(self._off) > 1).sum())

    def to_table(self) -> pa.Table:
        """``term`` string, ``class_ids`` list<int32>, ``n_words`` int32; sorted by term, for Arrow joins."""
        return pa.table(
            {
                "term": self._term_array,
                "class_ids": pa.ListArray.from_arrays(
                    pa.array(self._off.astype(np.int32)), pa.array(self._ids)
                ),
                "n_words": pa.array(self._n_words),
            }
        )

    def term_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR of term -> classes: (offsets int64 of length ``len(self) + 1``, class ids int32), read-only.

        Term ``t`` (a ``term_id`` of :meth:`find_array`, a row of :meth:`to_table`) names
        ``ids[offsets[t]:offsets[t + 1]]``, ascending; vectorised matching gathers from it directly.
        """
        off, ids = self._off.view(), self._ids.view()
        off.flags.writeable = False
        ids.flags.writeable = False
        return off, ids

    def find(self, text: str) -> list[tuple[str, tuple[int, ...]]]:
        """Terms occurring in ``text`` as whole-word n-grams, by start word then length; overlaps kept."""
        words = normalize(text).split() if text else []
        out: list[tuple[str, tuple[int, ...]]] = []
        for start in range(len(words)):
            gram = words[start]
            for n in range(1, min(self.max_words, len(words) - start) + 1):
                if n > 1:
                    gram = f"{gram} {words[start + n - 1]}"
                i = self._index.get(gram)
                if i is not None:
                    out.append((gram, self._ids_at(i)))
                if gram not in self._prefixes:
                    break
        return out

    def find_array(
        self,
        texts: pa.Array | pa.ChunkedArray | Sequence[str | None],
        *,
        positions: bool = False,
        normalized: bool = False,
    ) -> pa.Table:
        """:meth:`find` for a whole array: ``row`` int64 (position in ``texts``), ``term`` string.

        With ``positions``, also ``start`` int32 (word index of the match in the normalised text), ``n_words``
        int32 and ``term_id`` int32 (the term's row in :meth:`to_table`), which matching needs to keep only
        maximal matches and to map terms to classes without a string join. ``normalized`` says ``texts`` are
        already match keys (skips :func:`normalize_array`).

        Vectorised: words come from ``split_pattern``; n-grams grow one word at a time with
        ``binary_join_element_wise``, and only while they are still a prefix of some term, so the work is
        about one pass per word rather than ``max_words`` passes. Same order as :meth:`find`.
        """
        if not isinstance(texts, pa.Array | pa.ChunkedArray):
            texts = pa.array(texts, pa.string())
        if normalized:
            norm = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
        else:
            norm = normalize_array(texts)
        if norm.type != pa.string():
            norm = norm.cast(pa.string())
        words = pc.split_pattern(norm, " ")
        rows = pc.list_parent_indices(words).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(words)
        nonempty = pc.not_equal(flat, "")
        flat = flat.filter(nonempty)
        rows = rows[nonempty.to_numpy(zero_copy_only=False)]
        total = len(flat)

        starts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        term_ids: list[np.ndarray] = []
        found: list[pa.Array] = []
        cand = np.arange(total, dtype=np.int64)
        grams: pa.Array = flat
        gram_get = self._grams.get
        for n in range(1, self.max_words + 1):
            if not len(cand):
                break
            # Look up each distinct n-gram once, in a Python dict: the cost follows the batch, whereas
            # pc.is_in would rebuild a hash table of every term on every call.
            encoded = grams.dictionary_encode()
            distinct = encoded.dictionary.to_pylist()
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            found_code = np.fromiter((gram_get(g, 0) for g in distinct), np.int64, len(distinct))[codes]
            ids = ((found_code >> 1) - 1).astype(np.int32)
            hit = ids >= 0
            starts.append(cand[hit])
            lengths.append(np.full(int(hit.sum()), n, dtype=np.int32))
            term_ids.append(ids[hit])
            found.append(grams.filter(pa.array(hit)))
            if n == self.max_words:
                break
            grow = (found_code & 1).astype(bool)
            nxt = cand + n
            grow &= nxt < total
            grow[grow] = rows[nxt[grow]] == rows[cand[grow]]
            cand = cand[grow]
            grams = pc.binary_join_element_wise(
                grams.filter(pa.array(grow)), flat.take(pa.array(cand + n)), " "
            )

        schema = _FIND_POSITIONS_SCHEMA if positions else _FIND_SCHEMA
        if not found:
            return schema.empty_table()
        start = np.concatenate(starts)
        length = np.concatenate(lengths)
        order = np.lexsort((length, start))
        columns = [pa.array(rows[start[order]], pa.int64()), pa.concat_arrays(found).take(pa.array(order))]
        if positions:
            at = start[order]
            first_word = np.searchsorted(rows, rows[at], side="left")  # rows is sorted: a row's words are a run
            columns += [
                pa.array((at - first_word).astype(np.int32)),
                pa.array(length[order]),
                pa.array(np.concatenate(term_ids)[order]),
            ]
        return pa.table(columns, schema=schema)


# ---------------------------------------------------------------------------------------------- taxonomy


class Taxonomy:
    """An immutable class DAG with dense ids; build it with :meth:`from_table`."""

    __slots__ = (
        "__dict__",
        "_table",
        "_p_off",
        "_p_val",
        "_c_off",
        "_c_val",
        "_keys",
        "_names",
        "_s_off",
        "_s_val",
    )

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Taxonomy.from_table(table)")

    # -- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_table(cls, table: pa.Table) -> Taxonomy:
        """Validate a taxonomy table and build the hierarchy; raise TaxonomyError on any contract breach."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TaxonomyError(f"table: expected a pyarrow Table, got {type(table).__name__}")
        cols = {name: _column(table, name) for name in TAXONOMY_SCHEMA.names}
        n = table.num_rows
        for name in ("class_id", "key", "name"):
            if cols[name].null_count:
                row = _first_true(cols[name].is_null().to_numpy(zero_copy_only=False))
                raise TaxonomyError(f"{name}: null at row {row}")

        ids = cols["class_id"].to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        if n and sorted_ids[0] < 0:
            raise TaxonomyError(f"class_id: negative id {sorted_ids[0]}")
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if dup.size:
            raise TaxonomyError(f"class_id: duplicate id {sorted_ids[dup[0]]}")
        gap = np.flatnonzero(sorted_ids != np.arange(n))
        if gap.size:
            raise TaxonomyError(
                f"class_id: not dense from 0 (id {gap[0]} missing; {n} rows, max id {sorted_ids[-1]})"
            )
        take = pa.array(order)
        cols = {name: col.take(take) for name, col in cols.items()}

        keys = np.asarray(cols["key"].to_numpy(zero_copy_only=False), dtype=object)
        empty = pc.equal(cols["key"], "").to_numpy(zero_copy_only=False)
        if empty.any():
            raise TaxonomyError(f"key: empty key for class_id {_first_true(empty)}")
        counts = pc.value_counts(cols["key"])
        dup_keys = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(dup_keys):
            raise TaxonomyError(f"key: duplicate key {dup_keys.field('values')[0].as_py()}")
        names = np.asarray(cols["name"].to_numpy(zero_copy_only=False), dtype=object)
        empty = pc.equal(cols["name"], "").to_numpy(zero_copy_only=False)
        if empty.any():
            raise TaxonomyError(f"name: empty name for class_id {_first_true(empty)}")

        s_off, s_val_arr = _flatten(cols["synonyms"], n)
        if s_val_arr.null_count:
            row = np.searchsorted(s_off, _first_true(s_val_arr.is_null().to_numpy(False)), side="right") - 1
            raise TaxonomyError(f"synonyms: null synonym for class_id {row}")
        s_val = np.asarray(s_val_arr.to_numpy(zero_copy_only=False), dtype=object)

        p_off, p_val_arr = _flatten(cols["parents"], n)
        if p_val_arr.null_count:
            row = np.searchsorted(p_off, _first_true(p_val_arr.is_null().to_numpy(False)), side="right") - 1
            raise TaxonomyError(f"parents: null parent for class_id {row}")
        p_val = p_val_arr.to_numpy().astype(np.int64)
        child = np.repeat(np.arange(n, dtype=np.int64), np.diff(p_off))
        bad = (p_val < 0) | (p_val >= n)
        if bad.any():
            i = _first_true(bad)
            raise TaxonomyError(f"parents: class_id {child[i]} has unknown parent {p_val[i]}")
        selfp = p_val == child
        if selfp.any():
            c = int(child[_first_true(selfp)])
            raise TaxonomyError(f"parents: class_id {c} ({keys[c]}) lists itself as a parent")
        edge_key = np.sort(child * max(n, 1) + p_val)
        rep = np.flatnonzero(edge_key[1:] == edge_key[:-1])
        if rep.size:
            c, p = divmod(int(edge_key[rep[0]]), n)
            raise TaxonomyError(f"parents: class_id {c} lists parent {p} twice")

        by_parent = np.argsort(p_val, kind="stable")
        c_val = child[by_parent].astype(np.int32)
        c_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(p_val, minlength=n), out=c_off[1:])
        p_val32 = p_val.astype(np.int32)
        cycle = _cycle(n, p_off, p_val32, c_off, c_val)
        if cycle:
            raise TaxonomyError(f"parents: cycle through {' -> '.join(keys[c] for c in cycle)}")

        out = pa.table(
            [
                pa.array(np.arange(n, dtype=np.int32)),
                cols["key"],
                cols["name"],
                pa.ListArray.from_arrays(pa.array(s_off.astype(np.int32)), s_val_arr.cast(pa.string())),
                pa.ListArray.from_arrays(pa.array(p_off.astype(np.int32)), pa.array(p_val32)),
            ],
            schema=TAXONOMY_SCHEMA,
        )
        self = object.__new__(cls)
        for attr, value in (
            ("_table", out),
            ("_p_off", p_off),
            ("_p_val", p_val32),
            ("_c_off", c_off),
            ("_c_val", c_val),
            ("_keys", keys),
            ("_names", names),
            ("_s_off", s_off),
            ("_s_val", s_val),
        ):
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
            object.__setattr__(self, attr, value)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Taxonomy is immutable")

    def __reduce__(self) -> tuple[Any, tuple[pa.Table]]:
        # Beam and multiprocessing pickle taxonomies into workers: ship the table, rebuild there.
        return (Taxonomy.from_table, (self._table,))

    def to_table(self) -> pa.Table:
        """The taxonomy as a TAXONOMY_SCHEMA table, rows sorted by class_id (null lists become empty)."""
        return self._table

    # -- basic accessors -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and self._table.equals(other._table)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Taxonomy({len(self)} classes, {self.n_edges} edges, {len(self.roots())} roots)"

    @property
    def keys(self) -> np.ndarray:
        """Class keys by class_id (read-only object array, so ``keys[ids]`` works)."""
        return self._keys

    @property
    def names(self) -> np.ndarray:
        """Class names by class_id (read-only object array)."""
        return self._names

    @property
    def n_edges(self) -> int:
        return len(self._p_val)

    def _check(self, cid: int) -> int:
        c = int(cid)
        if not 0 <= c < len(self):
            raise IndexError(f"class_id {cid} out of range [0, {len(self)})")
        return c

    def key(self, cid: int) -> str:
        return self._keys[self._check(cid)]

    def name(self, cid: int) -> str:
        return self._names[self._check(cid)]

    def synonyms(self, cid: int) -> list[str]:
        c = self._check(cid)
        return list(self._s_val[self._s_off[c] : self._s_off[c + 1]])

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self._keys)}

    def id_of(self, key: str) -> int:
        """The class_id of a key; KeyError naming the key when it is not in the taxonomy."""
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"unknown class key {key!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def ids_of(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """class_id per key of an Arrow string array (int32; -1 for a null or unknown key).

        Each distinct key is looked up once in the cached dict, so a batch costs one dictionary encoding
        plus one lookup per distinct key, not a hash table of every taxonomy key per call.
        """
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        if pa.types.is_dictionary(keys.type):
            keys = keys.dictionary_decode()
        if not len(keys) or keys.null_count == len(keys):
            return np.full(len(keys), -1, dtype=np.int32)
        encoded = keys.dictionary_encode()
        index = self._index
        distinct = np.fromiter(
            (index.get(k, -1) for k in encoded.dictionary.to_pylist()), np.int32, len(encoded.dictionary)
        )
        codes = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        out = distinct[codes] if len(distinct) else np.full(len(keys), -1, dtype=np.int32)
        if encoded.indices.null_count:
            out[encoded.indices.is_null().to_numpy(zero_copy_only=False)] = -1
        return out

    # -- hierarchy -----------------------------------------------------------------------------------------

    def parents(self, cid: int) -> np.ndarray:
        """Direct parents (int32, in table order; read-only view)."""
        c = self._check(cid)
        return self._p_val[self._p_off[c] : self._p_off[c + 1]]

    def children(self, cid: int) -> np.ndarray:
        """Direct children (int32, ascending; read-only view)."""
        c = self._check(cid)
        return self._c_val[self._c_off[c] : self._c_off[c + 1]]

    @functools.cached_property
    def _roots(self) -> np.ndarray:
        out = np.flatnonzero(np.diff(self._p_off) == 0).astype(np.int32)
        out.flags.writeable = False
        return out

    def roots(self) -> np.ndarray:
        """Classes without parents (int32, ascending)."""
        return self._roots

    @functools.cached_property
    def _leaves(self) -> np.ndarray:
        out = np.flatnonzero(np.diff(self._c_off) == 0).astype(np.int32)
        out.flags.writeable = False
        return out

    def leaves(self) -> np.ndarray:
        """Classes without children (int32, ascending)."""
        return self._leaves

    def is_leaf(self, cid: int) -> bool:
        c = self._check(cid)
        return bool(self._c_off[c] == self._c_off[c + 1])

    def _closure(self, start: np.ndarray, offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
        seen = np.zeros(len(self), dtype=bool)
        frontier = np.asarray(start, dtype=np.int64)
        while frontier.size:
            frontier = np.unique(frontier[~seen[frontier]])
            seen[frontier] = True
            frontier = gather_csr(offsets, values, frontier)
        return np.flatnonzero(seen).astype(np.int32)

    def ancestors(self, cid: int) -> np.ndarray:
        """Every class above ``cid`` on any path (int32, ascending, excluding ``cid``)."""
        return self._closure(self.parents(cid), self._p_off, self._p_val)

    def descendants(self, cid: int) -> np.ndarray:
        """Every class below ``cid`` (int32, ascending, excluding ``cid``)."""
        return self._closure(self.children(cid), self._c_off, self._c_val)

    @functools.cached_property
    def _ancestor_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        child = np.repeat(np.arange(n, dtype=np.int64), np.diff(self._p_off))
        frontier = np.unique(child * n + self._p_val)
        steps = [frontier]
        # Step k holds the (c, a) pairs with a path of k+1 edges from c up to a: (c, a) and a's parents p
        # give (c, p). Each step is deduplicated, so the work is bounded by depth x closure size.
        while frontier.size:
            c, a = np.divmod(frontier, n)
            counts = self._p_off[a + 1] - self._p_off[a]
            frontier = np.unique(np.repeat(c, counts) * n + gather_csr(self._p_off, self._p_val, a))
            steps.append(frontier)
        keys = np.unique(np.concatenate(steps))
        cls, anc = (k.astype(np.int32) for k in np.divmod(keys, max(n, 1)))
        cls.flags.writeable = False
        anc.flags.writeable = False
        return cls, anc

    def ancestor_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole ancestor closure as two aligned int32 arrays (class, ancestor), sorted by both.

        For hierarchy features over many candidates at once: join candidates on it instead of walking the
        DAG per class. Built once per taxonomy (about 0.1M pairs for ImageNet-21k, in ~40 ms) and cached.
        """
        return self._ancestor_pairs

    def siblings(self, cid: int) -> np.ndarray:
        """Other children of ``cid``'s parents (int32, ascending)."""
        c = self._check(cid)
        kids = np.unique(gather_csr(self._c_off, self._c_val, self.parents(c).astype(np.int64)))
        return kids[kids != c].astype(np.int32)

    @functools.cached_property
    def _depths(self) -> np.ndarray:
        depth = np.full(len(self), -1, dtype=np.int32)
        frontier = self._roots.astype(np.int64)
        level = 0
        while frontier.size:
            depth[frontier] = level
            kids = np.unique(gather_csr(self._c_off, self._c_val, frontier))
            frontier = kids[depth[kids] < 0]
            level += 1
        depth.flags.writeable = False
        return depth

    def depths(self) -> np.ndarray:
        """Per class, the length of its shortest path to a root (roots are 0); read-only int32."""
        return self._depths

    def depth(self, cid: int) -> int:
        return int(self._depths[self._check(cid)])

    def root_path(self, cid: int) -> np.ndarray:
        """One shortest chain root -> ... -> ``cid`` (ties go to the lower class_id); for display."""
        c = self._check(cid)
        path = [c]
        while self._p_off[c] != self._p_off[c + 1]:
            ps = self.parents(c)
            c = int(ps[np.lexsort((ps, self._depths[ps]))[0]])
            path.append(c)
        return np.array(path[::-1], dtype=np.int32)

    # -- lexicon and summaries -----------------------------------------------------------------------------

    @functools.cached_property
    def _lexicon(self) -> Lexicon:
        return Lexicon._from_classes(self._names, self._s_off, self._s_val)

    def lexicon(self) -> Lexicon:
        """Normalised names and synonyms -> class ids (built once, cached)."""
        return self._lexicon

    def stats(self) -> dict[str, int]:
        """Headline counts, for CLI output and build logs."""
        lex = self.lexicon()
        return {
            "classes": len(self),
            "edges": self.n_edges,
            "roots": len(self.roots()),
            "leaves": len(self.leaves()),
            "multi_parent": int((np.diff(self._p_off) > 1).sum()),
            "max_depth": int(self._depths.max()) if len(self) else 0,
            "terms": len(lex),
            "homonymous_terms": lex.n_ambiguous,
            "max_term_words": lex.max_words,
        }


# ---------------------------------------------------------------------------------------------- files


def read_parquet(path: str | os.PathLike[str]) -> Taxonomy:
    """Load a local taxonomy Parquet file (the formats layer adds fsspec URLs and file-name prefixes)."""
    return Taxonomy.from_table(pq.read_table(path))


def write_parquet(taxonomy: Taxonomy, path: str | os.PathLike[str]) -> None:
    """Write deterministically (zstd, one row group) and atomically: a temp name, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(
            taxonomy.to_table(),
            tmp,
            compression="zstd",
            compression_level=19,
            row_group_size=max(len(taxonomy), 1),
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@functools.cache
def default_taxonomy() -> Taxonomy:
    """The ImageNet-21k / WordNet 3.0 taxonomy shipped with the package (21,843 classes)."""
    with resources.files("labeling").joinpath(DEFAULT_TAXONOMY_RESOURCE).open("rb") as f:
        return Taxonomy.from_table(pq.read_table(f))
