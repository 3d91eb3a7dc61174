"""What a build is asked to do (`BuildConfig`) and how that becomes Beam pipeline options.

The config splits in two: the settings that decide the output (recorded in the manifest and hashed into the
dataset id) and the execution settings (runner, pipeline arguments), which must not change a single output
byte and are therefore left out of the record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.formats import DEFAULT_SPLITS, split_of

DEFAULT_RUNNER = "FnApiRunner"
"""Beam's local batch runner, named directly: `DirectRunner` first tries to download the Prism binary."""

LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner")
UNSUPPORTED_RUNNERS: dict[str, str] = {
    "daskrunner": "DaskRunner is not supported: in Beam 2.77 it silently writes empty files",
    "interactiverunner": "InteractiveRunner is for notebooks; name FnApiRunner for a local build",
}
EXECUTION_FIELDS = frozenset({"runner", "pipeline_args"})
"""Fields that choose how a build runs, not what it writes; kept out of the manifest."""


class BuildConfig(BaseModel):
    """Everything `webjft build` needs besides the crawl and the output folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_precision: float = Field(0.8, gt=0.0, le=1.0, description="expected precision of the kept labels")
    budget: int | None = Field(None, ge=0, description="most labels to keep overall (None: no cap)")
    seed: int = Field(0, description="seed of the scorer's folds and of the label model")
    n_buckets: int = Field(64, ge=1, le=99_999, description="hash buckets (by page, then by image) and "
                           "candidate files; more buckets, smaller groups")
    max_text_chars: int = Field(2000, ge=1, description="signal texts longer than this are rejected")
    splits: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SPLITS))
    rows_per_shard: int = Field(20_000, ge=1, description="target images per shard; shards per split = "
                                "ceil(images / rows_per_shard), at least 1")
    include_content: bool = Field(True, description="copy image bytes into the shards (else content is null)")
    taxonomy: str | None = Field(None, description="taxonomy file; default the crawl's taxonomy.parquet, "
                                 "else the embedded ImageNet-21k default")
    label_model_rows: int = Field(200_000, ge=1, description="candidates sampled to fit the label model")
    runner: str = DEFAULT_RUNNER
    pipeline_args: tuple[str, ...] = ()

    @field_validator("splits", mode="before")
    @classmethod
    def _ordered_splits(cls, value: Any) -> Any:
        """Accept the recorded form, [[name, fraction], ...]: JSON objects lose their order in the manifest."""
        return dict(value) if isinstance(value, list | tuple) else value

    @field_validator("splits")
    @classmethod
    def _check_splits(cls, value: dict[str, float]) -> dict[str, float]:
        split_of(pa.array([], pa.string()), value)  # raises ValueError on bad names or fractions
        return dict(value)

    @field_validator("runner")
    @classmethod
    def _check_runner(cls, value: str) -> str:
        name = value.rsplit(".", 1)[-1].lower()
        for known in (name, f"{name}runner"):
            if known in UNSUPPORTED_RUNNERS:
                raise ValueError(UNSUPPORTED_RUNNERS[known])
        return value

    def recorded(self) -> dict[str, Any]:
        """The output-determining settings, as written into the manifest.

        Splits become a list of [name, fraction] pairs: their order decides which split an image falls in
        (`split_of`), and the manifest is written with sorted keys.
        """
        record = self.model_dump(mode="json", exclude=set(EXECUTION_FIELDS))
        record["splits"] = [[name, fraction] for name, fraction in self.splits.items()]
        return record

    def with_target(self, target_precision: float) -> BuildConfig:
        return self.model_validate({**self.model_dump(), "target_precision": target_precision})


def _has_option(args: tuple[str, ...], name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in args)


def pipeline_options(config: BuildConfig, extra: Mapping[str, Any] | None = None) -> PipelineOptions:
    """Beam options for one pass: the runner always named, local runners on every core by default.

    Arguments in `config.pipeline_args` win over the defaults (e.g. `--direct_running_mode=in_memory`).
    """
    args = tuple(config.pipeline_args)
    defaults = [f"--runner={config.runner}"] if not _has_option(args, "runner") else []
    if config.runner.rsplit(".", 1)[-1] in LOCAL_RUNNERS:
        if not _has_option(args, "direct_running_mode"):
            defaults.append("--direct_running_mode=multi_processing")
        in_memory = any(arg in ("--direct_running_mode=in_memory", "in_memory") for arg in args)
        if not in_memory and not _has_option(args, "direct_num_workers"):
            defaults.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return PipelineOptions([*defaults, *args], **dict(extra or {}))


def unknown_pipeline_args(args: tuple[str, ...] | list[str]) -> list[str]:
    """Arguments that no Beam pipeline option knows (Beam itself would drop them with a log line)."""
    loose = [arg for arg in args if not arg.startswith("--")]
    known = PipelineOptions([]).get_all_options()
    given = PipelineOptions(list(args)).get_all_options(retain_unknown_options=True)
    return loose[:1] + [f"--{name}" for name in given if name not in known]
