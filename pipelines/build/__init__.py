"""`webjft build` and `webjft reselect`: the Beam pipeline that turns a crawl into a dataset (docs/build.md)."""

from pipelines.build.config import BuildConfig, pipeline_options
from pipelines.build.errors import BuildError
from pipelines.build.reselect import reselect
from pipelines.build.run import BuildResult, build

__all__ = ["BuildConfig", "BuildError", "BuildResult", "build", "pipeline_options", "reselect"]
