"""The six web sources, each with its own noise process (see `SourceParams`).

Each source produces a `SignalBlock`: which image, which class the text was meant to name (or none),
whether that class is really one of the image's labels, the page, the weight and the text. Truth is
consulted here only to *generate* evidence; the crawl written out keeps just the text.

Error rates depend on the image: an atypical image gets wrong evidence more often (by `atypical_error_gain`,
keeping each source's mean accuracy at its parameter), and wrong evidence prefers the image's visual
confuser. Silent images get no evidence of their own at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from labeling.taxonomy import Taxonomy
from pipelines.synthetic.config import SourceParams, SynthConfig
from pipelines.synthetic.labels import ClassPlan, Truth
from pipelines.synthetic.text import NO_CLASS_TEMPLATES, TEMPLATES, TermTable, fill, stuffed, usable_templates


@dataclass(frozen=True)
class SignalBlock:
    source: str
    image: np.ndarray  # int64 image index
    cls: np.ndarray  # int32 class the text was meant to name; -1 = none; -2 = many (spam)
    correct: np.ndarray  # bool: `cls` is a true label of the image (False for -1 / -2)
    page: np.ndarray  # int64 page index, -1 = none
    weight: np.ndarray  # float32
    text: pa.Array | None  # None: the evidence names its class directly (class_key)

    def __len__(self) -> int:
        return len(self.image)


@dataclass(frozen=True)
class Pages:
    """Page memberships (slots): honest pages have a topic, spam pages a stuffed text."""

    slot_page: np.ndarray  # int64
    slot_image: np.ndarray  # int64
    slot_correct: np.ndarray  # bool: the page's topic is a true label of the image
    slot_spam: np.ndarray  # bool
    topic: np.ndarray  # int32 per page: the class an honest page is about; -2 for spam pages
    titles: pa.Array  # string per page
    page_ids: pa.Array  # string per page
    spam_pairs: tuple[np.ndarray, np.ndarray]  # (image, class) pairs that spam pages name
    n_spam_pages: int


class SourceModel:
    """Shared machinery for drawing which class each signal names."""

    def __init__(self, taxonomy: Taxonomy, plan: ClassPlan, truth: Truth, config: SynthConfig) -> None:
        self.taxonomy, self.plan, self.truth, self.config = taxonomy, plan, truth, config
        self.terms = TermTable.from_taxonomy(taxonomy)
        self.templates = {s: usable_templates(taxonomy, t) for s, t in TEMPLATES.items()}
        self.no_class_templates = {s: usable_templates(taxonomy, t) for s, t in NO_CLASS_TEMPLATES.items()}
        self.speaking = np.flatnonzero(~truth.silent)

    def params(self, source: str) -> SourceParams:
        return self.config.sources[source]

    def per_image(self, source: str, rng: np.random.Generator, cap_one: bool = False) -> np.ndarray:
        """Image indices with one row per signal of `source` (silent images excluded)."""
        rate = self.params(source).rate
        if cap_one:
            return self.speaking[rng.random(len(self.speaking)) < rate].astype(np.int64)
        counts = rng.poisson(rate, size=len(self.speaking))
        return np.repeat(self.speaking, counts).astype(np.int64)

    def is_right(self, images: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
        """Bernoulli(accuracy) per row, tilted by atypicality; the mean over images stays `accuracy`."""
        tilt = self.config.atypical_error_gain * 2 * min(accuracy, 1 - accuracy)
        p = accuracy + tilt * (0.5 - self.truth.atypicality[images])
        return rng.random(len(images)) < p

    def wrong_classes(self, images: np.ndarray, p_confuser: float, rng: np.random.Generator) -> np.ndarray:
        """Wrong classes: the visual confuser, or topic drift; redrawn when they hit a true label."""
        n = len(images)
        wrong = np.where(rng.random(n) < p_confuser, self.truth.confuser[images], self.plan.sample(rng, n))
        for _ in range(4):
            hit = self.truth.contains(images, wrong)
            if not hit.any():
                break
            wrong[hit] = self.plan.sample(rng, int(hit.sum()))
        return wrong.astype(np.int32)

    def name_classes(self, source: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The class each row's text names (-1 for none), following the source's parameters."""
        p = self.params(source)
        right = self.is_right(images, p.accuracy, rng)
        cls = np.where(right, self.truth.pick_label(rng, images),
                       self.wrong_classes(images, p.p_confuser, rng)).astype(np.int32)
        cls[rng.random(len(images)) < p.p_no_class] = -1
        return cls

    def texts(self, source: str, cls: np.ndarray, rng: np.random.Generator) -> pa.Array:
        """Texts naming `cls` through the source's templates; rows with -1 get a no-class text."""
        templates = self.templates[source]
        named = cls >= 0
        words = self.terms.terms.take(pa.array(self.terms.pick(np.maximum(cls, 0), rng)))
        text = fill(templates, rng.integers(0, len(templates), len(cls)), words)
        if named.all():
            return text
        blanks = self.no_class_templates[source]
        numbers = pa.array(rng.integers(100, 10_000, len(cls)).astype(str))
        blank = fill(blanks, rng.integers(0, len(blanks), len(cls)), numbers)
        return pa.array(np.where(named, text.to_numpy(zero_copy_only=False),
                                 blank.to_numpy(zero_copy_only=False)), type=pa.string())

    def block(self, source: str, images: np.ndarray, cls: np.ndarray, rng: np.random.Generator,
              weight: np.ndarray | None = None, page: np.ndarray | None = None) -> SignalBlock:
        n = len(images)
        return SignalBlock(
            source=source,
            image=images,
            cls=cls,
            correct=(cls >= 0) & self.truth.contains(images, cls),
            page=np.full(n, -1, dtype=np.int64) if page is None else page,
            weight=np.ones(n, dtype=np.float32) if weight is None else weight.astype(np.float32),
            text=self.texts(source, cls, rng),
        )


def alt_text(model: SourceModel, rng: np.random.Generator) -> SignalBlock:
    """At most one alt text per image: often right, else a sibling's name or a file name."""
    images = model.per_image("alt_text", rng, cap_one=True)
    return model.block("alt_text", images, model.name_classes("alt_text", images, rng), rng)


def anchor_text(model: SourceModel, rng: np.random.Generator) -> SignalBlock:
    """Texts of links pointing at the image."""
    images = model.per_image("anchor_text", rng)
    return model.block("anchor_text", images, model.name_classes("anchor_text", images, rng), rng)


def query_click(model: SourceModel, rng: np.random.Generator) -> SignalBlock:
    """Queries that led to clicks. Weight is the click count: right results earn clicks by relevance,
    wrong ones only by position bias (they were shown near the top)."""
    images = model.per_image("query_click", rng)
    cls = model.name_classes("query_click", images, rng)
    right = (cls >= 0) & model.truth.contains(images, cls)
    position = np.minimum(rng.geometric(0.35, len(images)), 20)
    rate = np.where(right, 6.0 / np.sqrt(position), 3.0 / position)
    clicks = 1 + rng.poisson(rate)
    return model.block("query_click", images, cls, rng, weight=clicks.astype(np.float32))


def user_feedback(model: SourceModel, rng: np.random.Generator) -> SignalBlock:
    """Sparse votes on a shown label: +1 for, -1 against; right with probability `accuracy`."""
    p = model.params("user_feedback")
    images = model.per_image("user_feedback", rng)
    on_true = rng.random(len(images)) < 0.5
    cls = np.where(on_true, model.truth.pick_label(rng, images),
                   model.wrong_classes(images, p.p_confuser, rng)).astype(np.int32)
    vote_right = model.is_right(images, p.accuracy, rng)
    weight = np.where(on_true == vote_right, 1.0, -1.0).astype(np.float32)
    n = len(images)
    return SignalBlock(
        source="user_feedback",
        image=images,
        cls=cls,
        correct=model.truth.contains(images, cls),
        page=np.full(n, -1, dtype=np.int64),
        weight=weight,
        text=None,
    )


def build_pages(model: SourceModel, rng: np.random.Generator) -> Pages:
    """Honest pages about a topic (with off-topic images on them) and keyword-stuffed spam pages."""
    config, truth, plan = model.config, model.truth, model.plan
    n_slots = round(config.n_images * config.page_memberships_per_image)
    n_honest = max(1, round(n_slots / config.page_size_mean))
    sizes = rng.geometric(1.0 / config.page_size_mean, n_honest)
    # Topics follow label frequencies among speaking images, so every topic has on-topic images.
    topic = truth.pick_label(rng, rng.choice(model.speaking, n_honest))
    # On-topic slots take distinct (speaking) images of the topic; a page whose topic has too few images
    # shrinks its off-topic part too, so every page keeps the source's purity on average.
    purity = model.params("page_title").accuracy
    pool_offsets, pool_images = _speaking_pools(truth, len(model.taxonomy), rng)
    pool_size = pool_offsets[topic + 1] - pool_offsets[topic]
    n_on = np.minimum(rng.binomial(sizes, purity), pool_size)
    n_off = np.where(n_on < pool_size, sizes - n_on, rng.binomial(np.round(n_on / purity).astype(np.int64),
                                                                  1 - purity))
    on_page = np.repeat(np.arange(n_honest, dtype=np.int64), n_on)
    within = np.arange(len(on_page)) - np.repeat(np.cumsum(n_on) - n_on, n_on)
    start = (rng.random(n_honest) * pool_size).astype(np.int64)
    on_image = pool_images[pool_offsets[topic[on_page]] + (start[on_page] + within) % pool_size[on_page]]
    off_page = np.repeat(np.arange(n_honest, dtype=np.int64), n_off)
    off_image = rng.integers(0, config.n_images, len(off_page))
    for _ in range(4):
        clash = truth.contains(off_image, topic[off_page])
        if not clash.any():
            break
        off_image[clash] = rng.integers(0, config.n_images, int(clash.sum()))
    slot_image, slot_page = _dedupe_slots(np.concatenate([on_image, off_image]),
                                          np.concatenate([on_page, off_page]))
    slot_correct = truth.contains(slot_image, topic[slot_page])
    title_templates = model.templates["page_title"]
    titles = fill(title_templates, rng.integers(0, len(title_templates), n_honest),
                  model.terms.terms.take(pa.array(model.terms.pick(topic, rng))))

    n_spam = round(config.spam_page_fraction * n_honest)
    spam_sizes = rng.integers(20, 61, n_spam)
    spam_page = np.repeat(np.arange(n_honest, n_honest + n_spam, dtype=np.int64), spam_sizes)
    spam_image, spam_page = _dedupe_slots(rng.integers(0, config.n_images, len(spam_page)), spam_page)
    lo, hi = config.spam_terms
    spam_classes = [plan.sample(rng, int(k)) for k in rng.integers(lo, hi + 1, n_spam)]
    spam_texts = stuffed(model.terms, [model.terms.pick(c, rng) for c in spam_classes])
    spam_pairs = _spam_pairs(spam_image, spam_page - n_honest, spam_classes)

    page_numbers = rng.permutation(n_honest + n_spam)
    page_ids = pa.array(np.char.add("pg", np.char.zfill(page_numbers.astype(str), 7)), type=pa.string())
    return Pages(
        slot_page=np.concatenate([slot_page, spam_page]),
        slot_image=np.concatenate([slot_image, spam_image]),
        slot_correct=np.concatenate([slot_correct, np.zeros(len(spam_page), dtype=bool)]),
        slot_spam=np.concatenate([np.zeros(len(slot_page), dtype=bool), np.ones(len(spam_page), dtype=bool)]),
        topic=np.concatenate([topic, np.full(n_spam, -2, dtype=np.int32)]),
        titles=pa.concat_arrays([titles, spam_texts]),
        page_ids=page_ids,
        spam_pairs=spam_pairs,
        n_spam_pages=n_spam,
    )


def page_title(pages: Pages) -> SignalBlock:
    """Every image on a page gets the page's title: right for on-topic images only (context bleeding)."""
    return SignalBlock(
        source="page_title",
        image=pages.slot_image,
        cls=pages.topic[pages.slot_page],
        correct=pages.slot_correct,
        page=pages.slot_page,
        weight=np.ones(len(pages.slot_page), dtype=np.float32),
        text=pages.titles.take(pa.array(pages.slot_page)),
    )


def surrounding_text(model: SourceModel, pages: Pages, rng: np.random.Generator) -> SignalBlock:
    """Text near the image on each page it appears on; spam pages repeat their stuffing."""
    rate = model.params("surrounding_text").rate
    keep = rng.random(len(pages.slot_page)) < min(rate, 1.0)
    keep &= pages.slot_spam | ~model.truth.silent[pages.slot_image]
    slot = np.flatnonzero(keep)
    images, page, spam = pages.slot_image[slot], pages.slot_page[slot], pages.slot_spam[slot]
    cls = np.full(len(slot), -2, dtype=np.int32)
    cls[~spam] = model.name_classes("surrounding_text", images[~spam], rng)
    honest_block = model.block("surrounding_text", images[~spam], cls[~spam], rng, page=page[~spam])
    text = np.empty(len(slot), dtype=object)
    text[~spam] = honest_block.text.to_numpy(zero_copy_only=False)
    text[spam] = pages.titles.take(pa.array(page[spam])).to_numpy(zero_copy_only=False)
    correct = np.zeros(len(slot), dtype=bool)
    correct[~spam] = honest_block.correct
    return SignalBlock(
        source="surrounding_text",
        image=images,
        cls=cls,
        correct=correct,
        page=page,
        weight=np.ones(len(slot), dtype=np.float32),
        text=pa.array(text, type=pa.string()),
    )


def _speaking_pools(truth: Truth, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CSR of speaking images per class, each class's images in random order."""
    offsets, images = truth.images_by_class(n_classes)
    class_of_entry = np.repeat(np.arange(n_classes), np.diff(offsets))
    keep = ~truth.silent[images]
    order = np.lexsort((rng.random(int(keep.sum())), class_of_entry[keep]))
    kept_counts = np.bincount(class_of_entry[keep], minlength=n_classes)
    new_offsets = np.zeros(n_classes + 1, dtype=np.int64)
    np.cumsum(kept_counts, out=new_offsets[1:])
    return new_offsets, images[keep][order]


def _dedupe_slots(images: np.ndarray, page: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An image appears at most once per page."""
    key = page.astype(np.int64) * (int(images.max(initial=0)) + 1) + images
    _, first = np.unique(key, return_index=True)
    first.sort()
    return images[first].astype(np.int64), page[first]


def _spam_pairs(images: np.ndarray, spam_index: np.ndarray, spam_classes: list[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    counts = np.array([len(c) for c in spam_classes], dtype=np.int64)
    flat = np.concatenate(spam_classes) if spam_classes else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    per_slot = counts[spam_index]
    pair_image = np.repeat(images, per_slot)
    starts = np.repeat(offsets[spam_index], per_slot)
    within = np.arange(len(pair_image)) - np.repeat(np.cumsum(per_slot) - per_slot, per_slot)
    return pair_image, flat[starts + within].astype(np.int32)
