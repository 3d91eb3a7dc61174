from __future__ import annotations

import pytest

from pipelines.synthetic import generate_crawl, preset


@pytest.fixture(scope="session")
def small_crawl(tmp_path_factory):
    """240 real 64-px JPEGs over 12 classes, with truth and a verified sample."""
    out = tmp_path_factory.mktemp("noise-crawl") / "crawl"
    generate_crawl(preset("tiny", seed=0, n_images=240, n_classes=12), str(out), workers=1)
    return out
