"""Embeddings: local weights only, clear errors, per-shard cache that resumes, random-weights demo model."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from index.embed import (
    DEMO_MODEL,
    Embedder,
    ModelChoice,
    choose_model,
    embed_shards,
    fingerprint,
    load_image_tower,
)
from index.tables import read_embeddings
from pipelines.formats import read_manifest
from tests.index.builders import make_dataset


@pytest.fixture(scope="module")
def dataset(small_crawl, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "data"
    make_dataset(small_crawl, out)
    return out


def test_without_weights_the_demo_config_has_random_weights_and_says_so():
    choice = choose_model(None, None)
    assert choice.name == DEMO_MODEL and choice.random
    assert "RANDOM weights" in choice.describe() and "weak" in choice.describe()
    with pytest.raises(ValueError, match="needs --weights"):
        choose_model("ViT-B-32", None)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_tower(ModelChoice(DEMO_MODEL, str(tmp_path / "nope.pt"), "test"))


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_image_tower(ModelChoice("ViT-Q-99", None, "test"))


def test_weights_of_another_architecture_are_refused(tmp_path):
    tower, _ = load_image_tower(ModelChoice(DEMO_MODEL, None, "test"))
    state = tower.state_dict()
    state["proj"] = torch.zeros(7, 7)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"does not match open_clip webjft-tiny-vit: 1 with other shapes \(first proj"):
        load_image_tower(ModelChoice(DEMO_MODEL, str(path), "test"))
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="missing"):
        load_image_tower(ModelChoice(DEMO_MODEL, str(path), "test"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        load_image_tower(ModelChoice(DEMO_MODEL, str(path), "test"))


def test_full_clip_checkpoints_and_tower_checkpoints_both_load(tmp_path):
    seeded, _ = load_image_tower(ModelChoice(DEMO_MODEL, None, "test", seed=5))
    full = {f"visual.{k}": v for k, v in seeded.state_dict().items()} | {"logit_scale": torch.ones(())}
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.items()}}, tmp_path / "full.pt")
    loaded, _ = load_image_tower(ModelChoice(DEMO_MODEL, str(tmp_path / "full.pt"), "test"))
    assert torch.equal(loaded.proj, seeded.proj)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in seeded.state_dict().items()}, tmp_path / "tower.safetensors")
    again, _ = load_image_tower(ModelChoice(DEMO_MODEL, str(tmp_path / "tower.safetensors"), "test"))
    assert torch.equal(again.proj, seeded.proj)
    assert fingerprint(ModelChoice(DEMO_MODEL, str(tmp_path / "full.pt"), "x")).startswith(f"{DEMO_MODEL}:sha256:")


def test_shards_are_embedded_cached_and_resumed(dataset, tmp_path):
    manifest = read_manifest(dataset)
    shards = [str(dataset / entry.path) for entry in manifest.shards]
    embedder = Embedder.load(ModelChoice(DEMO_MODEL, None, "test"), "cpu", batch_size=64, workers=1)
    calls = []
    files, stats = embed_shards(embedder, shards, str(tmp_path), progress=lambda *a: calls.append(a))
    assert stats["embedded_images"] == manifest.counts.images and stats["images_per_second"] > 0
    assert calls[-1] == ("embed", manifest.counts.images, manifest.counts.images)
    ids, x = read_embeddings(files)
    assert x.shape == (manifest.counts.images, 128) and np.isfinite(x).all()
    shard_ids = [pq.read_table(s, columns=["image_id"]).column("image_id").to_pylist() for s in shards]
    assert ids.to_pylist() == sum(shard_ids, [])

    # A killed run left one shard without a cache: only that one is embedded again, with the same vectors.
    (tmp_path / files[0].rsplit("/", 1)[1]).unlink()
    _, again = embed_shards(embedder, shards, str(tmp_path))
    assert again["embedded_images"] == len(shard_ids[0])
    np.testing.assert_allclose(read_embeddings(files)[1], x, atol=1e-5)

    # Another model's cache is never reused.
    other = Embedder.load(ModelChoice(DEMO_MODEL, None, "test", seed=1), "cpu", batch_size=64, workers=0)
    _, fresh = embed_shards(other, shards, str(tmp_path))
    assert fresh["embedded_images"] == manifest.counts.images
