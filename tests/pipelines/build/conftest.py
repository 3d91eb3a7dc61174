"""One tiny synthetic crawl (with JPEGs) and its in-process build, shared by the build tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.build import build
from pipelines.synthetic import generate_crawl, preset
from tests.pipelines.build.helpers import config


@pytest.fixture(scope="session")
def tiny_crawl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crawl") / "tiny"
    generate_crawl(preset("tiny", seed=0), str(path), workers=1)
    return path


@pytest.fixture(scope="session")
def reference(tiny_crawl, tmp_path_factory) -> Path:
    """The tiny crawl built with FnApiRunner in_memory: what every other build is compared with."""
    out = tmp_path_factory.mktemp("datasets") / "reference"
    build(tiny_crawl, out, config())
    return out
