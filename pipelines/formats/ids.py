"""A stable 64-bit hash of image ids, vectorised over Arrow string arrays.

Splits, membership tests on large crawls and Beam bucketing all key on it, so it must never change and
must not depend on the interpreter (Python's `hash()` is salted by PYTHONHASHSEED). It is FNV-1a 64 over
the UTF-8 bytes of the id followed by the splitmix64 finaliser (so that the top bits, which pick a
split, are well mixed); any language can reproduce it from this sentence.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hash_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash per id; nulls are not ids and raise ValueError.

    Rows are visited longest first so that step k only touches the ids longer than k: the cost is one
    numpy operation per byte position over the ids still active, i.e. proportional to the total bytes.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if ids.null_count:
        raise ValueError("image ids must not be null")
    ids = ids.cast(pa.large_binary())
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buf, data_buf = ids.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=ids.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    order = np.argsort(lengths, kind="stable")[::-1]
    starts = offsets[:-1][order]
    ascending = lengths[order][::-1]
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for pos in range(int(ascending[-1])):
            active = n - int(np.searchsorted(ascending, pos, side="right"))
            byte = data[starts[:active] + pos].astype(np.uint64)
            h[:active] = (h[:active] ^ byte) * _FNV_PRIME
        mixed = _splitmix64(h)
    out = np.empty(n, dtype=np.uint64)
    out[order] = mixed
    return out


class IdSet:
    """Membership test against a large set of image ids, in 8 bytes per id.

    `pc.is_in` rebuilds its hash table on every call, which costs seconds per batch against millions of
    ids; a sorted array of id hashes answers each batch with one `searchsorted`. Two different ids share a
    64-bit hash with probability about 2^-64 per pair, so a miss is certain and a hit is exact in practice.
    """

    def __init__(self, ids: pa.Array | pa.ChunkedArray) -> None:
        self._hashes = np.sort(hash_ids(ids))

    @classmethod
    def from_hashes(cls, hashes: np.ndarray) -> IdSet:
        """An IdSet from id hashes saved earlier (`hashes`): a pipeline ships 8 bytes per id, not strings."""
        self = cls.__new__(cls)
        self._hashes = np.sort(np.asarray(hashes, dtype=np.uint64))
        return self

    @property
    def hashes(self) -> np.ndarray:
        """The sorted uint64 hashes of the ids (what `from_hashes` takes back)."""
        return self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def contains(self, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Boolean mask: which of `ids` are in the set."""
        probe = hash_ids(ids)
        if not len(self._hashes):
            return np.zeros(len(probe), dtype=bool)
        at = np.minimum(np.searchsorted(self._hashes, probe), len(self._hashes) - 1)
        return self._hashes[at] == probe
