"""Beam pipelines, file formats and the synthetic crawl generator."""
