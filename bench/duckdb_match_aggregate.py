"""The yardstick for `webjft build` stages 1-3: the same read-match-aggregate written as one DuckDB query.

It reads the crawl's signals, drops rows a build would reject (unknown image, no text and no class key,
non-finite weight, text over 2,000 characters), normalises text with webjft's own rules (DuckDB's regexes
are RE2 like pyarrow's, so `labeling.text.PLURAL_RULES` are used verbatim), joins every 1..max-word n-gram
of each distinct text against the taxonomy's terms (web text repeats: a page title is shared by every image on
the page), adds the direct `class_key` evidence, and sums per (image, class) the
weight/ambiguity of each source, distinct pages, distinct sources and signal count. Output: one Parquet.

    python bench/duckdb_match_aggregate.py CRAWL [--out FILE] [--threads N]

Prints rows and seconds; run it under `/usr/bin/time -v` for peak memory (bench/build_vs_duckdb.sh does).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labeling.text import PLURAL_RULES
from pipelines.formats import SOURCES, read_taxonomy


def normalise_sql(column: str) -> str:
    """webjft's normalisation for ASCII text as a DuckDB expression."""
    expr = f"trim(regexp_replace(replace(lower(strip_accents({column})), '''', ''), '[^a-z0-9]+', ' ', 'g'))"
    for pattern, replacement in PLURAL_RULES:
        expr = f"regexp_replace({expr}, '{pattern}', '{replacement}', 'g')"
    return expr


def lexicon_table(crawl: str) -> tuple[pa.Table, pa.Table, int]:
    """(term, class_id, ambiguity) rows, (key, class_id) rows and the longest term in words."""
    taxonomy = read_taxonomy(crawl)
    terms = taxonomy.lexicon().to_table()
    lengths = pc.list_value_length(terms.column("class_ids"))
    exploded = pa.table({
        "term": pc.take(terms.column("term"), pc.list_parent_indices(terms.column("class_ids"))),
        "class_id": pc.list_flatten(terms.column("class_ids")),
        "ambiguity": pc.take(lengths, pc.list_parent_indices(terms.column("class_ids"))),
    })
    keys = taxonomy.to_table().select(["key", "class_id"])
    return exploded, keys, int(pc.max(terms.column("n_words")).as_py())


def query(crawl: str, max_words: int) -> str:
    sums = ",\n  ".join(f"sum(w) FILTER (WHERE source = '{s}') AS w_{s}" for s in SOURCES)
    return f"""
WITH images AS (SELECT image_id FROM read_parquet('{crawl}/images/*.parquet')),
sig AS (
  SELECT s.image_id, s.source, s.weight, s.page_id, s.class_key, s.text
  FROM read_parquet('{crawl}/signals/*.parquet') s SEMI JOIN images i ON s.image_id = i.image_id
  WHERE (s.text IS NOT NULL OR s.class_key IS NOT NULL) AND isfinite(s.weight)
    AND coalesce(length(s.text), 0) <= 2000
),
texts AS (SELECT text, string_split({normalise_sql("text")}, ' ') AS words
          FROM (SELECT DISTINCT text FROM sig WHERE text IS NOT NULL)),
starts AS (SELECT text, words, unnest(generate_series(1, len(words))) AS i FROM texts),
grams AS (SELECT text, array_to_string(words[i:i + n - 1], ' ') AS gram
          FROM (SELECT *, unnest(generate_series(1, {max_words})) AS n FROM starts)
          WHERE i + n - 1 <= len(words)),
matches AS (SELECT DISTINCT g.text, l.class_id, l.ambiguity FROM grams g JOIN lex l ON g.gram = l.term),
evidence AS (
  SELECT s.image_id, m.class_id, s.source, s.weight / m.ambiguity AS w, s.page_id
  FROM sig s JOIN matches m ON s.text = m.text
  UNION ALL
  SELECT s.image_id, k.class_id, s.source, s.weight AS w, s.page_id
  FROM sig s JOIN keys k ON s.class_key = k.key
)
SELECT image_id, class_id,
  {sums},
  count(DISTINCT page_id) AS n_pages, count(DISTINCT source) AS n_sources, count(*) AS n_signals
FROM evidence GROUP BY image_id, class_id
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crawl")
    parser.add_argument("--out", default=None, help="Parquet file to write (default: a temporary file)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit, e.g. 8GB (default: DuckDB's)")
    args = parser.parse_args()
    started = time.perf_counter()
    lex, keys, max_words = lexicon_table(args.crawl)
    connection = duckdb.connect()
    if args.threads:
        connection.execute(f"SET threads = {args.threads}")
    if args.memory_limit:
        connection.execute(f"SET memory_limit = '{args.memory_limit}'")
    connection.register("lex_arrow", lex)
    connection.register("keys_arrow", keys)
    connection.execute("CREATE TEMP TABLE lex AS SELECT * FROM lex_arrow")
    connection.execute("CREATE TEMP TABLE keys AS SELECT * FROM keys_arrow")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(Path(tmp) / "duckdb_candidates.parquet")
        connection.execute(f"COPY ({query(args.crawl, max_words)}) TO '{out}' (FORMAT parquet)")
        rows = pq.ParquetFile(out).metadata.num_rows
    print(f"duckdb: {rows:,} candidate rows in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
