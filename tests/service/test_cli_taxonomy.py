from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from labeling.taxonomy import TAXONOMY_SCHEMA, Taxonomy
from labeling.wordnet import build_from_wordnet
from service.commands import taxonomy as cli
from tests.labeling.test_wordnet import DATA_NOUN, LEMMAS, SYNSETS

runner = CliRunner()


@pytest.fixture
def sources(tmp_path: Path) -> list[str]:
    (tmp_path / "wn").mkdir()
    (tmp_path / "wn" / "data.noun").write_text(DATA_NOUN)
    (tmp_path / "synsets.txt").write_text("\n".join(SYNSETS) + "\n")
    (tmp_path / "lemmas.txt").write_text(LEMMAS)
    return ["--synsets", str(tmp_path / "synsets.txt"), "--lemmas", str(tmp_path / "lemmas.txt"),
            "--wordnet-dir", str(tmp_path / "wn")]  # fmt: skip


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_from_wordnet_writes_atomically(tmp_path: Path, sources: list[str]) -> None:
    out = tmp_path / "tax.parquet"
    result = runner.invoke(cli.app, ["from-wordnet", str(out), *sources])
    assert result.exit_code == 0, result.output
    assert "classes" in result.stdout and "not in WordNet 3.0 kept as roots: n00099999" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lemmas.txt", "synsets.txt", "tax.parquet", "wn"]
    table = pq.read_table(out)
    assert table.schema == TAXONOMY_SCHEMA
    assert Taxonomy.from_table(table) == build_from_wordnet(*(Path(p) for p in sources[1::2]))


def test_from_wordnet_errors(tmp_path: Path, sources: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [*sources[:-1], str(tmp_path / "missing")]
    line = _one_line_error(runner.invoke(cli.app, ["from-wordnet", str(tmp_path / "t.parquet"), *bad]))
    assert line.startswith("error: data.noun: file not found")
    line = _one_line_error(
        runner.invoke(cli.app, ["from-wordnet", str(tmp_path / "no" / "t.parquet"), *sources])
    )
    assert line.startswith("error: ") and "does not exist" in line
    monkeypatch.setattr(cli, "default_timm_info_dir", lambda: None)
    line = _one_line_error(runner.invoke(cli.app, ["from-wordnet", str(tmp_path / "t.parquet")]))
    assert "--synsets" in line and "pip install timm" in line
    assert not list(tmp_path.glob("t.parquet*"))


def test_stats_default() -> None:
    result = runner.invoke(cli.app, ["stats"])
    assert result.exit_code == 0, result.output
    assert "21,843" in result.stdout and "homonym" in result.stdout and "depth" in result.stdout


def test_stats_file_and_bad_files(tmp_path: Path, sources: list[str]) -> None:
    out = tmp_path / "tax.parquet"
    assert runner.invoke(cli.app, ["from-wordnet", str(out), *sources]).exit_code == 0
    result = runner.invoke(cli.app, ["stats", str(out)])
    assert result.exit_code == 0, result.output
    assert "crane" in result.stdout  # the one homonym

    line = _one_line_error(runner.invoke(cli.app, ["stats", str(tmp_path / "nope.parquet")]))
    assert line == f"error: {tmp_path / 'nope.parquet'}: no such file"
    (tmp_path / "junk.parquet").write_text("not parquet")
    line = _one_line_error(runner.invoke(cli.app, ["stats", str(tmp_path / "junk.parquet")]))
    assert line.startswith(f"error: {tmp_path / 'junk.parquet'}: not a readable")
    cyclic = pq.read_table(out).to_pylist()
    cyclic[1]["parents"] = [0]  # entity under dog, which is under animal, which is under entity
    pq.write_table(pa.Table.from_pylist(cyclic, schema=TAXONOMY_SCHEMA), tmp_path / "cyclic.parquet")
    line = _one_line_error(runner.invoke(cli.app, ["stats", str(tmp_path / "cyclic.parquet")]))
    assert line.startswith(f"error: {tmp_path / 'cyclic.parquet'}: parents: cycle through ")


def test_lookup() -> None:
    result = runner.invoke(cli.app, ["lookup", "Cranes"])
    assert result.exit_code == 0, result.output
    assert "n02012849" in result.stdout and "n03126707" in result.stdout and "2 classes" in result.stdout
    assert "wading bird" in result.stdout
    result = runner.invoke(cli.app, ["lookup", "no such thing zz"])
    assert result.exit_code == 1
    assert "no class is named" in result.stderr


def test_lookup_custom_taxonomy(tmp_path: Path, sources: list[str]) -> None:
    out = tmp_path / "tax.parquet"
    assert runner.invoke(cli.app, ["from-wordnet", str(out), *sources]).exit_code == 0
    result = runner.invoke(cli.app, ["lookup", "beast", "--taxonomy", str(out)])
    assert result.exit_code == 0, result.output
    assert "n00003000" in result.stdout and "entity > animal" in result.stdout


def test_show() -> None:
    result = runner.invoke(cli.app, ["show", "n02088364"])
    assert result.exit_code == 0, result.output
    assert "beagle" in result.stdout and "n02087551 hound" in result.stdout and "depth" in result.stdout
    by_id = runner.invoke(cli.app, ["show", "2191"])
    assert by_id.exit_code == 0 and by_id.stdout == result.stdout
    line = _one_line_error(runner.invoke(cli.app, ["show", "n99999999"]))
    assert line.startswith("error: unknown class 'n99999999'")
    _one_line_error(runner.invoke(cli.app, ["show", "99999999"]))


def test_help_lists_commands() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for command in ("from-wordnet", "stats", "lookup", "show"):
        assert command in result.stdout
