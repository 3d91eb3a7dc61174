"""index.run end to end: the same inputs, configuration and seed give byte-identical outputs, in both modes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from index.noise import NoiseConfig
from index.run import noise_for_dataset, noise_for_labels
from index.testdata import gaussian_classes
from pipelines.synthetic import generate_crawl, preset
from tests.index.builders import make_dataset, write_labelled_set

OUTPUTS = ["classes.parquet", "images.parquet", "fig2.png", "audit-sample.parquet"]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


@pytest.mark.parametrize("verified", [True, False], ids=["calibrated", "unsupervised"])
def test_labels_mode_twice_gives_the_same_bytes(tmp_path, verified):
    labels, embeddings, verified_file = write_labelled_set(
        gaussian_classes(seed=4, n_classes=8, n_images=1200, n_verified=150), tmp_path / "set")
    runs = []
    for name in ("a", "b"):
        run = noise_for_labels(str(labels), str(embeddings), str(tmp_path / name),
                               verified=str(verified_file) if verified else None,
                               config=NoiseConfig(backend="faiss-cpu", seed=3), audit_size=40)
        runs.append(run)
    assert runs[0].result.method == ("calibrated" if verified else "unsupervised-mixture")
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")


def test_dataset_mode_twice_embeds_and_gives_the_same_bytes(tmp_path):
    generate_crawl(preset("tiny", seed=6, n_images=160, n_classes=8), str(tmp_path / "crawl"), workers=1)
    make_dataset(tmp_path / "crawl", tmp_path / "data")
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    for folder in ("data", "copy"):  # the random-weights tower embeds each copy afresh: nothing is cached yet
        noise_for_dataset(str(tmp_path / folder), workers=0, batch_size=32, audit_size=20,
                          config=NoiseConfig(backend="faiss-cpu"))
    assert _bytes(tmp_path / "data" / "noise") == _bytes(tmp_path / "copy" / "noise")
