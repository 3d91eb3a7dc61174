"""Index: open_clip embeddings, k-means and label-noise estimates."""
