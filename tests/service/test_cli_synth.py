"""`webjft synth` and `webjft demo` from the outside: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "validate", "taxonomy", "demo"):
        assert command in result.output


def test_synth_tiny_writes_a_valid_crawl(tmp_path):
    out = tmp_path / "crawl"
    result = runner.invoke(app, ["synth", str(out), "--preset", "tiny", "--seed", "5", "--no-images"])
    assert result.exit_code == 0, result.output
    assert "labels/image" in result.output
    summary = json.loads((out / "synth.json").read_text())
    assert summary["config"]["seed"] == 5 and summary["config"]["images"] is False
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0


def test_synth_bad_preset_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--preset", "huge"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "huge" in lines[0]


def test_synth_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    result = runner.invoke(app, ["synth", str(tmp_path), "--preset", "tiny", "--no-images"])
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_demo_runs_end_to_end_on_a_small_preset(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "crawl" / "truth.parquet").is_file()
    for target in ("0.7", "0.8", "0.9"):
        assert (tmp_path / "demo" / f"dataset-p{target}" / "manifest.json").is_file()
    assert "achieved" in result.output and "done" in result.output


def test_console_script_is_installed():
    completed = subprocess.run([sys.executable, "-m", "service.cli", "synth", "--help"],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0
    assert "--preset" in completed.stdout
