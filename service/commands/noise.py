"""`webjft noise`: label-noise estimates per class and per image, for a dataset or any labelled set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from service.errors import fail, one_line_errors

# torch, open_clip and faiss load only when the command runs, so that `webjft --help` stays fast.
BACKENDS = ("auto", "faiss-gpu", "torch-cuda", "faiss-cpu", "torch-cpu")
DECODE_ON = ("auto", "workers", "device")

_console = Console(stderr=True)


class _Rate(ProgressColumn):
    """Items per second, for the stages where that is the number to watch (embedding)."""

    def render(self, task) -> Text:
        if task.speed is None or not task.fields.get("rate"):
            return Text("")
        return Text(f"{task.speed:,.0f} images/s")


@contextmanager
def _progress() -> Iterator:
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                  TimeElapsedColumn(), console=_console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total, rate=stage == "embed")
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def noise(
    dataset: Annotated[str | None, typer.Argument(help="A dataset folder made by `webjft build`.")] = None,
    labels: Annotated[str | None, typer.Option(help="Instead of DATASET: a labels Parquet file "
                                                    "(image_id string, labels list<int32>, optional scores "
                                                    "list<float32>: P(label right) per label).")] = None,
    embeddings: Annotated[str | None, typer.Option(help="Embeddings Parquet file (image_id string, embedding "
                                                        "list<float32>); required with --labels.")] = None,
    verified: Annotated[list[str] | None, typer.Option(help="Verified sample (image_id, class_key, correct; or a "
                                                            "dataset's verified.parquet: image_id, class_id, "
                                                            "correct, score); repeat for several files. Default "
                                                            "for a dataset: its own verified.parquet (its crawl's "
                                                            "checked pairs that were candidates, with the build's "
                                                            "scores), else its crawl's.")] = None,
    no_verified: Annotated[bool, typer.Option("--no-verified", help="Ignore any verified sample: unsupervised "
                                                                    "estimate.")] = False,
    label_scores: Annotated[bool, typer.Option(help="Calibrate the labels' own scores (a dataset's `scores`, or "
                                                    "a `scores` column in --labels) in as a third signal.")] = True,
    taxonomy: Annotated[str | None, typer.Option(help="With --labels: taxonomy Parquet whose keys the verified "
                                                      "class_key uses (else class_key is the class id).")] = None,
    out: Annotated[str | None, typer.Option(help="With --labels: folder for classes.parquet, images.parquet, "
                                                 "fig2.png, report.json.")] = None,
    model: Annotated[str | None, typer.Option(help="open_clip architecture of --weights, e.g. ViT-B-32.")] = None,
    weights: Annotated[str | None, typer.Option(help="Local weights file (.pt/.bin/.safetensors) of --model; "
                                                     "without it a small config with random weights.")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device for embedding (default cuda when present).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes decoding images.")] = None,
    decode_on: Annotated[str, typer.Option(help="Where images are decoded: workers (PIL in worker processes), "
                                           "device (nvJPEG on the GPU) or auto (device on CUDA).")] = "auto",
    backend: Annotated[str, typer.Option(help=f"k-means backend: {', '.join(BACKENDS)}.")] = "auto",
    neighbours: Annotated[int, typer.Option(help="Neighbours per image for the label-agreement signal.")] = 15,
    whiten_dims: Annotated[int, typer.Option(help="PCA-whiten the embeddings to at most this many principal axes "
                                                  "before any distance is taken (0: off).", min=0)] = 256,
    seed: Annotated[int, typer.Option(help="Seed of k-means sampling and random model weights.")] = 0,
    top: Annotated[int, typer.Option(help="Worst classes to list.")] = 10,
    audit_sample: Annotated[int, typer.Option(help="Also write audit-sample.parquet: this many labels to verify "
                                                   "next, chosen where the class estimates are least sure; fill "
                                                   "in `correct` and pass it back with --verified.")] = 0,
    audit_min_labels: Annotated[int, typer.Option(help="With --audit-sample: draw only from classes with at least "
                                                       "this many labels. Set it to the smallest class whose rate "
                                                       "you need: the budget then goes where you will read it.",
                                                  min=1)] = 20,
) -> None:
    """Estimate label noise per class and per image from visual embeddings (Sun et al. 2017, Fig. 2).

    DATASET mode writes noise/classes.parquet, noise/images.parquet, noise/fig2.png and noise/report.json into
    the dataset and lists them in its manifest. --labels mode does the same for any labelled image set.
    With a verified sample the estimates are calibrated (and use the labels' scores, when there are any, as a
    third signal); without one they come from an unsupervised mixture.
    """
    from index.embed import choose_model
    from index.noise import NoiseConfig
    from index.run import noise_for_dataset, noise_for_labels

    if (dataset is None) == (labels is None):
        fail("give either DATASET or --labels LABELS.parquet --embeddings EMB.parquet --out DIR")
    if labels is not None and (embeddings is None or out is None):
        fail("--labels needs --embeddings EMB.parquet and --out DIR")
    if dataset is not None and (out is not None or taxonomy is not None):
        fail("--out and --taxonomy are for --labels mode (a dataset writes to DATASET/noise with its own classes)")
    if neighbours < 1 or top < 1 or batch_size < 1:
        fail("--neighbours, --top and --batch-size must be at least 1")
    if audit_sample < 0:
        fail("--audit-sample must be 0 (none) or a number of labels")
    if decode_on not in DECODE_ON:
        fail(f"--decode-on must be one of {', '.join(DECODE_ON)}, not {decode_on!r}")
    console = Console(soft_wrap=True)
    with one_line_errors():
        config = NoiseConfig(neighbours=neighbours, seed=seed, backend=backend, label_scores=label_scores,
                             whiten_dims=whiten_dims)
        with _progress() as progress:
            if labels is not None:
                run = noise_for_labels(labels, embeddings, out, verified=None if no_verified else verified,
                                       taxonomy=taxonomy, config=config, progress=progress, audit_size=audit_sample,
                                       audit_min_labels=audit_min_labels)
            else:
                choice = None if embeddings is not None else choose_model(model, weights, seed)
                run = noise_for_dataset(dataset, embeddings=embeddings, verified=verified or None,
                                        use_verified=not no_verified, audit_size=audit_sample,
                                        audit_min_labels=audit_min_labels, model=choice,
                                        device=device,
                                        batch_size=batch_size, workers=workers, config=config, progress=progress,
                                        decode_on=decode_on, log=lambda line: console.print(line, markup=False))
    _print_summary(console, run, top)


def _print_summary(console: Console, run, top: int) -> None:
    from index.figure import curve_lines
    from index.run import worst_classes

    result = run.result
    for note in run.notes + result.notes:
        console.print(f"note: {note}", markup=False)
    if run.stats.get("images_per_second"):
        console.print(f"embedded {run.stats['embedded_images']:,} images at "
                      f"{run.stats['images_per_second']:,.0f} images/s")
    stats = result.stats
    console.print(f"{stats['labels']:,} labels on {stats['images']:,} images in {stats['classes']:,} classes; "
                  f"method {result.method}; k-means on {stats['backend']}")
    console.rule("label noise vs distance to class centroids (Fig. 2)")
    for line in curve_lines(result.curve):
        console.print(line, markup=False, highlight=False)
    worst = worst_classes(run, top)
    table = Table(title=f"{worst.num_rows} noisiest classes", show_header=True)
    named = "name" in worst.column_names
    for column in ["class_id", *(["name"] if named else []), "labels", "noise", "95% interval", "method"]:
        table.add_column(column, justify="left" if column in ("name", "method") else "right")
    for row in worst.to_pylist():
        table.add_row(str(row["class_id"]), *([row["name"]] if named else []), f"{row['n_images']:,}",
                      f"{100 * row['noise_rate']:.1f}%", f"{100 * row['noise_low']:.1f}-{100 * row['noise_high']:.1f}%",
                      row["method"])
    console.print(table)
    if run.audit:
        console.print(f"labels to verify next: {_rows(run.audit):,} in {run.audit}; fill in `correct` and pass it "
                      "back with --verified (repeat --verified, e.g. with DATASET/verified.parquet, to keep your other "
                      "samples)", markup=False)
    console.print(f"[bold green]done[/]: {run.out} (figure {run.figure})")


def _rows(path: str) -> int:
    from pipelines.formats import open_parquet

    with open_parquet(path) as parquet:
        return parquet.metadata.num_rows
