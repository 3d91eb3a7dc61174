"""`webjft build` and `webjft reselect` from the outside: options reach the build, errors are one line."""

from __future__ import annotations

from typer.testing import CliRunner

from pipelines.formats import validate_dataset
from service.cli import app
from tests.pipelines.build.helpers import digests

runner = CliRunner()
TEST_SETTINGS = ["--n-buckets", "8", "--rows-per-shard", "100", "--direct_running_mode=in_memory"]


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_help_lists_build_and_reselect():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "build" in result.output and "reselect" in result.output
    assert "--target-precision" in runner.invoke(app, ["build", "--help"]).output


def test_build_passes_options_and_beam_arguments_through(tiny_crawl, reference, tmp_path):
    out = tmp_path / "ds"
    result = runner.invoke(app, ["build", str(tiny_crawl), str(out), "--target-precision", "0.8", *TEST_SETTINGS])
    assert result.exit_code == 0, result.output
    assert "expected precision" in result.output and "candidates in 8 buckets" in result.output
    assert digests(out) == digests(reference)
    again = runner.invoke(app, ["build", str(tiny_crawl), str(out), *TEST_SETTINGS])
    assert "--overwrite" in _error_line(again)
    replaced = runner.invoke(app, ["build", str(tiny_crawl), str(out), "--overwrite", *TEST_SETTINGS])
    assert replaced.exit_code == 0, replaced.output
    assert digests(out) == digests(reference)


def test_build_refuses_bad_settings_in_one_line(tiny_crawl, tmp_path):
    out = str(tmp_path / "ds")
    assert "--bogus" in _error_line(runner.invoke(app, ["build", str(tiny_crawl), out, "--bogus=1"]))
    dask = _error_line(runner.invoke(app, ["build", str(tiny_crawl), out, "--runner", "DaskRunner"]))
    assert "silently writes empty files" in dask
    assert "target_precision" in _error_line(
        runner.invoke(app, ["build", str(tiny_crawl), out, "--target-precision", "1.5"])
    )
    missing = _error_line(runner.invoke(app, ["build", str(tmp_path / "nowhere"), out, *TEST_SETTINGS]))
    assert "nowhere: does not exist" in missing


def test_reselect_writes_a_new_version_next_to_the_dataset(reference):
    result = runner.invoke(app, ["reselect", str(reference), "--target-precision", "0.9",
                                 "--direct_running_mode=in_memory"])
    assert result.exit_code == 0, result.output
    new = reference.parent / f"{reference.name}-p0.9"
    assert validate_dataset(new).labels < validate_dataset(reference).labels


def test_reselect_of_an_incomplete_dataset_is_a_one_line_error(tmp_path):
    (tmp_path / "shards").mkdir()
    assert "incomplete" in _error_line(runner.invoke(app, ["reselect", str(tmp_path), "--target-precision", "0.9"]))
