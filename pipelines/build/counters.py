"""Row counts kept by Beam metrics, so that the driver can prove no pass lost or duplicated data.

Each pass counts what it produced and what arrived after each shuffle; the driver compares them with each
other and with what it knows (rows in the crawl's footers, rows in the files written). A runner that
drops data (Beam 2.77's FnApiRunner with several worker processes does, under load, on large inputs)
stops the build with one line instead of writing a silently smaller dataset. Runners that report no
metrics skip the check.
"""

from __future__ import annotations

from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.runners.runner import PipelineResult

from pipelines.build.errors import BuildError

NAMESPACE = "webjft"


def count_rows(name: str, rows: int) -> None:
    """Add `rows` to the pass's counter `name` (inside a DoFn)."""
    if rows:
        Metrics.counter(NAMESPACE, name).inc(int(rows))


def read_counters(result: PipelineResult) -> dict[str, int]:
    """Committed (else attempted) values of the pass's counters; {} when the runner reports none."""
    if type(result).metrics is PipelineResult.metrics:  # the runner's result does not report metrics
        return {}
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals: dict[str, int] = {}
    for metric in found:
        value = metric.committed if metric.committed is not None else metric.attempted
        totals[metric.key.metric.name] = totals.get(metric.key.metric.name, 0) + int(value or 0)
    return totals


def check(counters: dict[str, int], what: str, produced: int | str, arrived: int | str) -> None:
    """Stop when two counts of the same rows differ; names are counter names, numbers are known totals."""
    if not counters:
        return
    left = counters.get(produced, 0) if isinstance(produced, str) else produced
    right = counters.get(arrived, 0) if isinstance(arrived, str) else arrived
    if left != right:
        raise BuildError(
            f"the runner lost or duplicated data: {what}: {left:,} rows sent, {right:,} received; nothing was "
            "written as complete. Re-run with --direct_running_mode=in_memory or on another runner"
        )
