from __future__ import annotations

import pytest

from pipelines.synthetic import generate_crawl, preset


@pytest.fixture(scope="session")
def tiny_crawl(tmp_path_factory):
    """The tiny preset with images, seed 0."""
    out = tmp_path_factory.mktemp("synth") / "tiny"
    report = generate_crawl(preset("tiny", seed=0), str(out), workers=2)
    return out, report


@pytest.fixture(scope="session")
def stats_crawl(tmp_path_factory):
    """Large enough for statistics (20k images, 300 classes), without image content to stay fast."""
    out = tmp_path_factory.mktemp("synth") / "stats"
    config = preset("demo", seed=7, images=False, n_images=20_000, n_classes=300)
    report = generate_crawl(config, str(out))
    return out, report, config
