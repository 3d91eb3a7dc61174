"""Class hierarchies as flat arrays: closures, labels with ancestors, relations; and agreement through them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from index.hierarchy import ancestor_closure, gather_csr, relation, sorted_unique, with_ancestors
from index.knn import label_agreement, neighbours


def test_with_ancestors_adds_every_class_above_each_label_once():
    # 0 <- 1 <- 3, 0 <- 2 <- 3 (3 has two parents), 2 <- 4; class 5 has no parents; 6 is beyond `parents`.
    parents = pa.array([[], [0], [0], [1, 2], [2], []], pa.list_(pa.int32()))
    offsets = np.array([0, 1, 3, 3, 4, 5])
    values = np.array([3, 4, 1, 5, 6], dtype=np.int32)
    new_offsets, new_values = with_ancestors(offsets, values, parents)
    rows = [new_values[a:b].tolist() for a, b in zip(new_offsets[:-1], new_offsets[1:], strict=True)]
    assert rows == [[0, 1, 2, 3], [0, 1, 2, 4], [], [5], [6]]


def test_hierarchy_lets_descendants_support_an_ancestor_label():
    # Two images of a beagle (class 2, under dog = 1): one labelled "dog", its neighbour "beagle".
    x = np.array([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.0], [-0.99, 0.1]], dtype=np.float32)
    offsets, values = np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 3], dtype=np.int32)
    nbrs = neighbours(x, 1, backend="faiss-cpu")
    rows, classes = np.arange(4), values
    flat, _ = label_agreement(nbrs, offsets, values, rows, classes)
    parents = pa.array([[], [0], [1], [0]], pa.list_(pa.int32()))
    tree, _ = label_agreement(nbrs, *with_ancestors(offsets, values, parents), rows, classes)
    assert flat.tolist() == [0, 0, 1, 1] and tree.tolist() == [1, 0, 1, 1]



def test_closure_relation_and_helpers():
    parents = pa.array([[], [0], [0], [1, 2], [2], []], pa.list_(pa.int32()))
    offsets, values = ancestor_closure(np.array([3, 4, 5]), parents)
    assert [values[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == [[0, 1, 2, 3],
                                                                                              [0, 2, 4], [5]]
    related = relation(np.array([1, 3, 4, 5]), parents)
    a, b = np.array([3, 1, 4, 3, 5]), np.array([1, 3, 1, 4, 5])
    assert related(a, b).tolist() == [True, True, False, False, True]
    assert not relation(np.array([1, 3]), None)(np.array([1]), np.array([3])).any()
    assert sorted_unique(np.array([5, 1, 5, 3, 1])).tolist() == [1, 3, 5]
    assert sorted_unique(np.array([], dtype=np.int64)).size == 0
    got, counts = gather_csr(np.array([0, 2, 2, 5]), np.array([7, 8, 9, 10, 11]), np.array([2, 0, 1]))
    assert got.tolist() == [9, 10, 11, 7, 8] and counts.tolist() == [3, 2, 0]
