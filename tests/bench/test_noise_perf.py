"""bench/noise_perf.py's decode timing: every rate it reports is measured over the images it was given."""

from __future__ import annotations

import pytest

from tests.bench.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("noise_perf")


def test_decode_reports_each_path_and_worker_count(bench, capsys):
    rates = bench.bench_decode("webjft-tiny-vit", n=24, image_px=64, workers=[1, 2], batch=8)
    assert list(rates) == ["decode only, 1 process", "decode + transform, 1 process",
                           "decode + transform, DataLoader, 1 workers", "decode + transform, DataLoader, 2 workers"]
    assert all(rate > 0 for rate in rates.values())
    printed = capsys.readouterr().out
    assert "24 JPEGs of 64 px" in printed and "2 workers" in printed

