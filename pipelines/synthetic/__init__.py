"""A synthetic web crawl with known truth: the embedded default data and the yardstick for quality."""

from pipelines.synthetic.config import PRESETS, SourceParams, SynthConfig, preset
from pipelines.synthetic.generate import SynthReport, generate_crawl

__all__ = ["PRESETS", "SourceParams", "SynthConfig", "SynthReport", "generate_crawl", "preset"]
