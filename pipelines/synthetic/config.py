"""Parameters of the synthetic web crawl, and the named presets.

Every noise process in the generator is driven by a field here, so that quality measured on a synthetic
crawl can be traced back to the parameters that produced it (they are written to `synth.json`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PresetName = Literal["tiny", "demo", "bench"]


class SourceParams(BaseModel):
    """How one web source produces evidence about an image.

    `rate` is the expected number of signals per image (per page membership for page sources),
    `accuracy` the probability that a signal naming a class names one of the image's true classes,
    `p_no_class` the probability that the text names no class at all (e.g. alt text "IMG_2041").
    Wrong signals name the image's visual confuser (a taxonomy sibling) with probability
    `p_confuser`, otherwise a class drawn from the crawl's class frequencies (topic drift).
    """

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(ge=0.0)
    accuracy: float = Field(ge=0.0, le=1.0)
    p_no_class: float = Field(default=0.0, ge=0.0, le=1.0)
    p_confuser: float = Field(default=0.5, ge=0.0, le=1.0)


def _default_sources() -> dict[str, SourceParams]:
    return {
        # One alt text per image at most; short, often right, sometimes a sibling or a file name.
        "alt_text": SourceParams(rate=0.8, accuracy=0.80, p_no_class=0.15, p_confuser=0.7),
        # Page titles: `rate` is unused (every page membership gets its page's title); `accuracy` is
        # the page's topic purity, so the same title is wrong for every off-topic image (context bleeding).
        "page_title": SourceParams(rate=1.0, accuracy=0.60, p_confuser=0.0),
        # Text near the image on a page: per page membership; drifts to other topics.
        "surrounding_text": SourceParams(rate=0.8, accuracy=0.55, p_no_class=0.10, p_confuser=0.3),
        # Link texts pointing at the image.
        "anchor_text": SourceParams(rate=0.9, accuracy=0.70, p_no_class=0.10, p_confuser=0.5),
        # Search queries that led to a click on the image; weight is the click count (position bias).
        "query_click": SourceParams(rate=1.5, accuracy=0.70, p_confuser=0.6),
        # Sparse votes on shown labels: `accuracy` is the probability a vote is right (+1 for a true
        # label, -1 for a wrong one).
        "user_feedback": SourceParams(rate=0.04, accuracy=0.90, p_confuser=0.8),
    }


class SynthConfig(BaseModel):
    """The whole synthetic crawl: size, label structure, rendering and per-source noise."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    n_images: int = Field(gt=0)
    n_classes: int | None = Field(default=None, gt=1, description="active classes; None = whole taxonomy")
    images: bool = True
    image_size: int = Field(default=64, ge=16, le=512)
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    # Labels.
    zipf_exponent: float = Field(default=0.9, ge=0.0)
    p_extra_label: float = Field(default=0.3, ge=0.0, le=1.0)
    p_extra_is_ancestor: float = Field(default=0.5, ge=0.0, le=1.0)
    p_homonym_class: float = Field(default=0.05, ge=0.0, le=1.0)
    p_silent_image: float = Field(default=0.04, ge=0.0, le=1.0, description="true labels with no evidence")
    # Pages.
    page_memberships_per_image: float = Field(default=3.5, gt=0.0)
    page_size_mean: float = Field(default=8.0, ge=1.0)
    spam_page_fraction: float = Field(default=0.02, ge=0.0, le=1.0)
    spam_terms: tuple[int, int] = (15, 40)
    # Looks: how far atypical images drift towards their confuser, and per-image noise.
    confusion_pull: float = Field(default=0.6, ge=0.0, le=1.0)
    image_noise: float = Field(default=0.45, ge=0.0)
    # How strongly an image's atypicality raises the error rate of its signals (0 = not at all).
    atypical_error_gain: float = Field(default=0.8, ge=0.0, le=1.0)
    # Verified sample: uniform over candidate (image, class) pairs.
    n_verified: int = Field(default=2000, ge=0)
    sources: dict[str, SourceParams] = Field(default_factory=_default_sources)
    # Output layout.
    images_per_file: int = Field(default=20_000, gt=0)
    signals_per_file: int = Field(default=1_000_000, gt=0)


PRESETS: dict[str, dict] = {
    "tiny": dict(n_images=600, n_classes=40, n_verified=300, images_per_file=250, signals_per_file=2_000),
    "demo": dict(n_images=20_000, n_classes=1_000, n_verified=10_000),
    "bench": dict(n_images=1_000_000, n_classes=None, n_verified=30_000, images_per_file=50_000),
}


def preset(name: str, seed: int = 0, **overrides) -> SynthConfig:
    """A named preset with optional field overrides (e.g. `images=False`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SynthConfig(**{**PRESETS[name], "seed": seed, **overrides})
