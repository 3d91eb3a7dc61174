"""True labels of the synthetic crawl: which classes exist, how often, and which image has which.

The structure mimics JFT: a long-tailed (Zipf-like) class distribution over a real hierarchy, about 1.3
labels per image, the extra label being either an ancestor of the main one ("beagle" + "dog") or a class
that tends to co-occur with it. Each image also gets a visual confuser (a taxonomy sibling of its main
class) and an atypicality in [0, 1): atypical images look more like their confuser and draw more wrong
evidence, which is what makes label noise rise with distance to the class centre (Sun et al., Fig. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from labeling.taxonomy import Taxonomy
from pipelines.synthetic.config import SynthConfig


@dataclass(frozen=True)
class ClassPlan:
    """The classes a crawl draws images from, their frequencies and their relations."""

    active: np.ndarray  # int32 taxonomy class ids, sorted
    weights: np.ndarray  # float64 probabilities aligned with `active`
    main_parent: np.ndarray  # int32 per taxonomy class: the parent on a shortest path to a root, or -1
    partner: np.ndarray  # int32 per taxonomy class: its co-occurring class (-1 when not active)
    sibling_offsets: np.ndarray  # int64 CSR over taxonomy classes: siblings of each active class
    sibling_values: np.ndarray  # int32

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Classes drawn from the crawl's class frequencies."""
        return self.active[rng.choice(len(self.active), size=size, p=self.weights)].astype(np.int32)


@dataclass(frozen=True)
class Truth:
    """Per image: its labels (CSR, sorted ids), main class, visual confuser, atypicality, silence."""

    offsets: np.ndarray  # int64, len n_images + 1
    values: np.ndarray  # int32 class ids
    main: np.ndarray  # int32
    extra: np.ndarray  # int32, -1 when the image has one label
    extra_is_cooccurring: np.ndarray  # bool: the extra label is another object in the picture
    confuser: np.ndarray  # int32
    atypicality: np.ndarray  # float64 in [0, 1)
    silent: np.ndarray  # bool: no source ever names this image's labels correctly

    @property
    def n_images(self) -> int:
        return len(self.main)

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def contains(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Whether each (image, class) pair is a true label; vectorised over pairs."""
        starts, ends = self.offsets[images], self.offsets[images + 1]
        found = np.zeros(len(images), dtype=bool)
        for k in range(int(self.counts().max(initial=0))):
            pos = starts + k
            valid = pos < ends
            found[valid] |= self.values[pos[valid]] == classes[valid]
        return found

    def pick_label(self, rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
        """One of each image's true labels, uniformly."""
        counts = self.counts()[images]
        return self.values[self.offsets[images] + (rng.random(len(images)) * counts).astype(np.int64)]

    def slice_images(self, start: int, stop: int) -> Truth:
        """The truth of images [start, stop), renumbered from 0 (to ship a part to a worker)."""
        offsets = self.offsets[start:stop + 1]
        return Truth(
            offsets=offsets - offsets[0],
            values=self.values[offsets[0]:offsets[-1]],
            main=self.main[start:stop],
            extra=self.extra[start:stop],
            extra_is_cooccurring=self.extra_is_cooccurring[start:stop],
            confuser=self.confuser[start:stop],
            atypicality=self.atypicality[start:stop],
            silent=self.silent[start:stop],
        )

    def images_by_class(self, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR of the images holding each class (over all taxonomy ids), for sampling pages."""
        image_of_label = np.repeat(np.arange(self.n_images, dtype=np.int64), self.counts())
        order = np.argsort(self.values, kind="stable")
        offsets = np.zeros(n_classes + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.values, minlength=n_classes), out=offsets[1:])
        return offsets, image_of_label[order]


def main_parents(taxonomy: Taxonomy) -> np.ndarray:
    """Per class, the parent with the smallest depth (so depth strictly decreases along it), or -1."""
    depths = taxonomy.depths()
    out = np.full(len(taxonomy), -1, dtype=np.int32)
    for cid in range(len(taxonomy)):
        parents = taxonomy.parents(cid)
        if len(parents):
            out[cid] = parents[np.argmin(depths[parents])]
    return out


def choose_classes(taxonomy: Taxonomy, config: SynthConfig, rng: np.random.Generator) -> ClassPlan:
    """Pick the active classes in sibling groups (so look-alikes exist), with some homonyms."""
    n_tax = len(taxonomy)
    if config.n_classes is None or config.n_classes >= n_tax:
        active = np.arange(n_tax, dtype=np.int32)
    else:
        active = _sibling_groups(taxonomy, config, rng)
    ranks = rng.permutation(len(active))
    weights = (ranks + 1.0) ** -config.zipf_exponent
    weights /= weights.sum()
    plan_without_partners = ClassPlan(
        active=active,
        weights=weights,
        main_parent=main_parents(taxonomy),
        partner=np.full(n_tax, -1, dtype=np.int32),
        sibling_offsets=np.zeros(n_tax + 1, dtype=np.int64),
        sibling_values=np.zeros(0, dtype=np.int32),
    )
    partner = np.full(n_tax, -1, dtype=np.int32)
    drawn = plan_without_partners.sample(rng, len(active))
    clash = drawn == active
    drawn[clash] = active[(np.searchsorted(active, drawn[clash]) + 1) % len(active)]
    partner[active] = drawn
    sibling_counts = np.zeros(n_tax, dtype=np.int64)
    sibling_lists = []
    for cid in active:
        siblings = np.asarray(taxonomy.siblings(int(cid)), dtype=np.int32)
        sibling_counts[cid] = len(siblings)
        sibling_lists.append(siblings)
    sibling_offsets = np.zeros(n_tax + 1, dtype=np.int64)
    np.cumsum(sibling_counts, out=sibling_offsets[1:])
    # Lists were built in active order, which is taxonomy order: CSR positions line up.
    sibling_values = np.concatenate(sibling_lists) if sibling_lists else np.zeros(0, dtype=np.int32)
    return ClassPlan(
        active=active,
        weights=weights,
        main_parent=plan_without_partners.main_parent,
        partner=partner,
        sibling_offsets=sibling_offsets,
        sibling_values=sibling_values.astype(np.int32),
    )


def _sibling_groups(taxonomy: Taxonomy, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    target = int(config.n_classes or 0)
    chosen: set[int] = set()
    terms = taxonomy.lexicon().to_table()
    ambiguous = terms.filter(pc.greater(pc.list_value_length(terms.column("class_ids")), 1))
    homonym_classes = np.unique(pc.list_flatten(ambiguous.column("class_ids")).to_numpy())
    n_homonyms = min(len(homonym_classes), round(config.p_homonym_class * target))
    if n_homonyms:
        chosen.update(int(c) for c in rng.choice(homonym_classes, size=n_homonyms, replace=False))
    groups = [cid for cid in range(len(taxonomy)) if len(taxonomy.children(cid)) >= 2]
    for parent in rng.permutation(groups):
        if len(chosen) >= target:
            break
        children = np.asarray(taxonomy.children(int(parent)))
        take = min(len(children), int(rng.integers(2, 7)), target - len(chosen))
        chosen.update(int(c) for c in rng.choice(children, size=take, replace=False))
    return np.array(sorted(chosen), dtype=np.int32)


def sample_truth(plan: ClassPlan, config: SynthConfig, rng: np.random.Generator) -> Truth:
    """Labels, confusers, atypicality and silence for every image."""
    n = config.n_images
    main = plan.sample(rng, n)
    has_extra = rng.random(n) < config.p_extra_label
    parent = plan.main_parent[main]
    want_ancestor = rng.random(n) < config.p_extra_is_ancestor
    use_ancestor = want_ancestor & (parent >= 0)
    extra = np.where(use_ancestor, parent, plan.partner[main]).astype(np.int32)
    extra[~has_extra | (extra == main)] = -1
    extra_is_cooccurring = (extra >= 0) & ~use_ancestor

    pairs = np.stack([main, extra], axis=1)
    pairs.sort(axis=1)  # -1 sorts first; drop it below
    counts = 1 + (extra >= 0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = pairs[pairs >= 0].astype(np.int32)

    sib_start, sib_end = plan.sibling_offsets[main], plan.sibling_offsets[main + 1]
    n_sib = sib_end - sib_start
    pick = sib_start + (rng.random(n) * n_sib).astype(np.int64)
    fallback = plan.sample(rng, n)
    confuser = np.where(n_sib > 0, plan.sibling_values[np.minimum(pick, len(plan.sibling_values) - 1)]
                        if len(plan.sibling_values) else fallback, fallback).astype(np.int32)
    same = confuser == main
    confuser[same] = plan.partner[main[same]]

    return Truth(
        offsets=offsets,
        values=values,
        main=main,
        extra=extra,
        extra_is_cooccurring=extra_is_cooccurring,
        confuser=confuser,
        atypicality=rng.random(n),
        silent=rng.random(n) < config.p_silent_image,
    )
