"""``webjft taxonomy``: build the default taxonomy from WordNet, and inspect or query any taxonomy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from labeling.taxonomy import Taxonomy, TaxonomyError, default_taxonomy, write_parquet
from labeling.text import normalize
from labeling.wordnet import LEMMAS_FILE, SYNSETS_FILE, WordNetError, build_with_report, default_timm_info_dir
from service.errors import fail

app = typer.Typer(
    help="Build, inspect and query class taxonomies (class ids, names, synonyms, parent DAG).",
    no_args_is_help=True,
)
console = Console(highlight=False)

TaxonomyPath = Annotated[
    Path | None,
    typer.Option("--taxonomy", "-t", help="Taxonomy Parquet file (default: the built-in ImageNet-21k one)."),
]


def _fail(message: str) -> NoReturn:
    fail(message)
    raise AssertionError("unreachable: fail() exits")


def _load(path: Path | None) -> Taxonomy:
    """The taxonomy at ``path``, or the built-in default; any problem is a one-line error."""
    if path is None:
        return default_taxonomy()
    if not path.is_file():
        _fail(f"{path}: no such file")
    try:
        return Taxonomy.from_table(pq.read_table(path))
    except TaxonomyError as exc:
        _fail(f"{path}: {exc}")
    except (pa.ArrowException, OSError) as exc:
        _fail(f"{path}: not a readable taxonomy Parquet file ({exc})")


def _path_names(tax: Taxonomy, cid: int) -> str:
    return " > ".join(tax.names[tax.root_path(cid)])


def _print_counts(tax: Taxonomy, title: str) -> None:
    table = Table(title=title, show_header=False)
    for name, value in tax.stats().items():
        table.add_row(name.replace("_", " "), f"{value:,}")
    console.print(table)


@app.command("from-wordnet")
def from_wordnet(
    out: Annotated[Path, typer.Argument(help="Where to write the taxonomy Parquet file.")],
    synsets: Annotated[
        Path | None,
        typer.Option(help=f"ImageNet synset id list, one per line (default: timm's {SYNSETS_FILE})."),
    ] = None,
    lemmas: Annotated[
        Path | None, typer.Option(help=f"Synset id<TAB>lemmas file (default: timm's {LEMMAS_FILE}).")
    ] = None,
    wordnet_dir: Annotated[
        Path, typer.Option(help="WordNet 3.0 dict folder holding data.noun (Debian: wordnet-base).")
    ] = Path("/usr/share/wordnet"),
) -> None:
    """Build a taxonomy of ImageNet synsets linked by WordNet 3.0 hypernyms and write it to OUT."""
    if synsets is None or lemmas is None:
        info = default_timm_info_dir()
        if info is None:
            _fail("ImageNet-21k synset lists not found: pass --synsets and --lemmas, or `pip install timm`")
        synsets = synsets or info / SYNSETS_FILE
        lemmas = lemmas or info / LEMMAS_FILE
    if not out.parent.is_dir():
        _fail(f"{out}: folder {out.parent} does not exist")
    with console.status("Reading the synset lists and WordNet nouns, linking hypernyms...") as status:
        try:
            build = build_with_report(synsets, lemmas, wordnet_dir)
        except (WordNetError, TaxonomyError) as exc:
            _fail(str(exc))
        status.update(f"Writing {out}...")
        try:
            write_parquet(build.taxonomy, out)
        except OSError as exc:
            _fail(f"{out}: cannot write: {exc.strerror or exc}")
    console.print(f"Wrote {out}")
    _print_counts(build.taxonomy, "taxonomy")
    if build.missing_from_wordnet:
        console.print(
            f"{len(build.missing_from_wordnet)} id(s) not in WordNet 3.0 kept as roots: "
            + ", ".join(build.missing_from_wordnet[:10])
        )
    if build.names_from_wordnet:
        console.print(
            f"{len(build.names_from_wordnet)} id(s) missing from the lemma file, named from WordNet"
        )


@app.command()
def stats(
    path: Annotated[
        Path | None, typer.Argument(help="Taxonomy Parquet file (default: the built-in one).")
    ] = None,
    top: Annotated[int, typer.Option(help="How many of the most ambiguous terms to list.")] = 10,
) -> None:
    """Counts, roots, depth histogram and homonyms of a taxonomy."""
    tax = _load(path)
    _print_counts(tax, str(path) if path else "default taxonomy")

    depth = Table(title="classes by depth (shortest path to a root)")
    depth.add_column("depth", justify="right")
    depth.add_column("classes", justify="right")
    for d, count in enumerate(np.bincount(tax.depths(), minlength=1)):
        depth.add_row(str(d), f"{count:,}")
    console.print(depth)

    roots = tax.roots()
    shown = ", ".join(tax.names[roots[:top]])
    console.print(f"roots ({len(roots):,}): {shown}{', ...' if len(roots) > top else ''}")

    lex = tax.lexicon().to_table()
    n_classes = pc.list_value_length(lex["class_ids"])
    ambiguous = lex.append_column("n_classes", n_classes).filter(pc.greater(n_classes, 1))
    ambiguous = ambiguous.sort_by([("n_classes", "descending"), ("term", "ascending")]).slice(0, max(top, 0))
    if ambiguous.num_rows:
        homonyms = Table(title=f"most ambiguous terms (of {tax.lexicon().n_ambiguous:,} homonyms)")
        homonyms.add_column("term")
        homonyms.add_column("classes", justify="right")
        homonyms.add_column("keys")
        for row in ambiguous.to_pylist():
            homonyms.add_row(row["term"], str(row["n_classes"]), " ".join(tax.keys[row["class_ids"]]))
        console.print(homonyms)


@app.command()
def lookup(
    term: Annotated[str, typer.Argument(help="A word or phrase, e.g. 'crane' or 'hot dogs'.")],
    taxonomy: TaxonomyPath = None,
) -> None:
    """Which classes TERM can mean (exit 1 when none): keys, names and a path from a root."""
    tax = _load(taxonomy)
    ids = tax.lexicon().classes_for(term)
    if not ids:
        typer.echo(f"no class is named {term!r} (normalised: {normalize(term)!r})", err=True)
        raise typer.Exit(1)
    table = Table(title=f"{term!r} can mean {len(ids)} class{'es' if len(ids) > 1 else ''}")
    for column in ("class_id", "key", "name", "path from a root"):
        table.add_column(column)
    for cid in ids:
        table.add_row(str(cid), tax.keys[cid], tax.names[cid], _path_names(tax, cid))
    console.print(table)


@app.command()
def show(
    class_: Annotated[str, typer.Argument(metavar="KEY_OR_ID", help="A class key (n02084071) or class_id.")],
    taxonomy: TaxonomyPath = None,
) -> None:
    """One class: name, synonyms, parents, children, depth and a path from a root."""
    tax = _load(taxonomy)
    if class_ in tax:
        cid = tax.id_of(class_)
    elif class_.isdigit() and int(class_) < len(tax):
        cid = int(class_)
    else:
        _fail(f"unknown class {class_!r}: not a key, nor a class_id below {len(tax)}")
    children = tax.children(cid)
    table = Table(show_header=False, title=f"{tax.keys[cid]}  {tax.names[cid]}")
    table.add_row("class_id", str(cid))
    table.add_row("key", tax.keys[cid])
    table.add_row("name", tax.names[cid])
    table.add_row("synonyms", ", ".join(tax.synonyms(cid)) or "-")
    table.add_row(
        "parents", ", ".join(f"{tax.keys[p]} {tax.names[p]}" for p in tax.parents(cid)) or "- (root)"
    )
    table.add_row(
        "children",
        f"{len(children):,}" + (f": {', '.join(tax.names[children[:10]])}" if len(children) else ""),
    )
    table.add_row("descendants", f"{len(tax.descendants(cid)):,}")
    table.add_row("siblings", f"{len(tax.siblings(cid)):,}")
    table.add_row("depth", str(tax.depth(cid)))
    table.add_row("path", _path_names(tax, cid))
    console.print(table)
