from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from pipelines.formats import write_crawl_table
from service.commands.validate import validate
from tests.pipelines.formats.builders import make_crawl, make_dataset

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """webjft stand-in: registers validate as a subcommand, as service/cli.py does."""

    app.command()(validate)
    return app


def test_help(app):
    result = runner.invoke(app, ["validate", "--help"])
    assert result.exit_code == 0
    assert "crawl folder or a dataset folder" in result.output and "--strict" in result.output


def test_valid_crawl(app, tmp_path):
    crawl = make_crawl(tmp_path)
    result = runner.invoke(app, ["validate", crawl])
    assert result.exit_code == 0, result.output
    assert "signals rows" in result.stdout and "valid" in result.stdout


def test_valid_dataset(app, tmp_path):
    dataset = make_dataset(tmp_path)
    result = runner.invoke(app, ["validate", f"file://{dataset}", "--strict"])
    assert result.exit_code == 0, result.output
    assert "labels per image" in result.stdout and "1.50" in result.stdout


def test_incomplete_dataset_exits_2_with_one_line(app, tmp_path):
    dataset = make_dataset(tmp_path, manifest=False)
    result = runner.invoke(app, ["validate", dataset])
    assert result.exit_code == 2
    assert result.stderr == f"error: {dataset}: incomplete: no manifest.json\n"


def test_broken_crawl_exits_2(app, tmp_path):
    crawl = make_crawl(tmp_path)
    Path(crawl, "signals", "part-00000-of-00002.parquet").write_bytes(b"garbage")
    result = runner.invoke(app, ["validate", crawl])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {crawl}/signals/part-00000-of-00002.parquet: not a Parquet file")
    assert result.stderr.count("\n") == 1


def test_missing_path_exits_2(app, tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path}/nothing: does not exist\n"


def test_warnings_fail_only_with_strict(app, tmp_path):
    crawl = make_crawl(tmp_path)
    ghost = pa.table({"image_id": ["ghost"], "source": ["alt_text"], "text": ["dog"]})
    write_crawl_table(ghost, crawl, "signals", 0, 1)
    relaxed = runner.invoke(app, ["validate", crawl])
    assert relaxed.exit_code == 0 and "signal_unknown_image" in relaxed.stdout
    strict = runner.invoke(app, ["validate", crawl, "--strict"])
    assert strict.exit_code == 1 and strict.stderr == "error: 1 warning with --strict\n"
