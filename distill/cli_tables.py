"""`distill recipes` and `distill report`: the commands that show tables, registered on the
`distill` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distill.cli import app, console
from distill.errors import DistillError
from distill.files import shipped_or_given_all


@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe in full.",
                                                  show_default=False)] = None,
) -> None:
    """List the recipes with their networks' sizes, or show one recipe."""
    import timm
    from rich.table import Table

    from distill.datasets import get_dataset
    from distill.nets import parameter_count
    from distill.recipes import available_recipes, load_recipe
    from distill.transfer import excluded_text

    if name is not None:
        recipe = load_recipe(name)
        console.print(available_recipes()[recipe.name].read_text() if recipe.name in
                      available_recipes() else Path(name).read_text())
        return
    table = Table(title="Recipes (recipes/*.yaml)")
    for column in ("recipe", "network", "parameters", "method", "data", "epochs",
                   "description"):
        table.add_column(column, justify="right" if column in ("parameters", "epochs")
                         else "left")
    for recipe_name in available_recipes():
        r = load_recipe(recipe_name)
        params = parameter_count(timm.create_model(r.network, **r.network_options))
        settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in r.distillation.describe().items() if k != "method")
        method = ("a teacher, on labels" if r.role == "teacher" else
                  f"{r.distillation.method} ({settings})")
        fraction, excluded = r.data.labeled_fraction, r.data.exclude_classes
        data = [r.dataset, "all labels" if fraction == 1 else "no labels" if fraction == 0
                else f"{100 * fraction:g}% of the labels"]
        if excluded:
            data.append(excluded_text(excluded, get_dataset(r.dataset, r.image_size).classes))
        table.add_row(recipe_name, r.network, f"{params:,}", method, ", ".join(data),
                      str(r.schedule.epochs), r.description)
    console.print(table)


@app.command()
def report(
    runs: Annotated[list[Path] | None, typer.Argument(
        help="Run folders, or folders of run folders (default: runs/).", show_default=False,
        callback=shipped_or_given_all)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Where to write comparison.md, comparison.json, gains.json and the plots: "
             "accuracy_vs_size.png, gains.png (gains over the twins) and labels_curve.png, each "
             "dataset but MNIST's with its name added (and a folder's image size, other than "
             "28) (default: the single folder given, else "
             "runs/; never models/, which holds the releases).", show_default=False)] = None,
    measure: Annotated[bool, typer.Option(
        help="Measure every run's CPU latency and throughput again, one after another, so they "
             "compare under the same conditions.")] = True,
) -> None:
    """One table of the teacher and every student: accuracy against size.

    Then each recipe's gain over its twin, seed by seed, from the folders of
    several seeds: distill report runs runs/seed1 runs/seed2.
    Runs of one recipe with other settings get rows of their own, named by
    what differs, e.g. "tiny (epochs 30)".
    """
    # typer keeps the line breaks of this paragraph: its lines fit an 80-column terminal.
    from rich.table import Table

    from distill.compare import (
        GAIN_COLUMNS,
        gain_rows,
        gains_over_twins,
        repeats_line,
        unnamed_teacher,
    )
    from distill.report import (
        OMITTED_COLUMNS,
        by_dataset,
        collect_reports,
        omitted_rows,
        remeasure_speed,
        table_columns,
        table_rows,
        write_comparison,
    )

    runs = runs or [Path("runs")]
    target = report_folder(runs, out)
    reports = collect_reports(runs)
    if not reports:
        raise DistillError(f"No finished runs (report.json) in {', '.join(map(str, runs))}. "
                           "Train some with `distill teacher` and `distill student`.")
    if measure:
        with console.status("Measuring CPU speed of every run"):
            remeasure_speed(reports)

    def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
        table = Table(title=title)
        for column in columns:
            # Fold rather than cut: on a narrow terminal every figure stays readable.
            table.add_column(column, justify="left" if column in ("run", "model", "recipe")
                             else "right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)

    for dataset, runs_of_dataset in by_dataset(reports).items():
        print_table(f"Teacher and students on {dataset}", table_columns(runs_of_dataset),
                    table_rows(runs_of_dataset))
        if omitted := omitted_rows(runs_of_dataset):
            print_table(f"Classes never seen in training, on {dataset} (test top-1 before and "
                        "after a bias on their logits)", OMITTED_COLUMNS, omitted)
        if gains := gains_over_twins(runs_of_dataset):
            print_table(f"Gain over the twin on {dataset} (test top-1, points; mean ± sd over "
                        f"seeds, 95% t-interval{unnamed_teacher(gains)})", GAIN_COLUMNS,
                        gain_rows(gains))
            if repeats := repeats_line(gains):
                console.print(repeats)
    listed = write_comparison(reports, target)
    console.print(f"Wrote {', '.join(map(str, listed[:-1]))} and {listed[-1]}")


def report_folder(runs: list[Path], out: Path | None) -> Path:
    """Where `distill report` writes its tables and plots: --out, else the single folder read,
    else runs/. Never into models/: `distill report models` is how the releases are compared,
    and their folder holds only what `distill publish` wrote."""
    from distill.files import is_in_releases

    if out is not None:
        if is_in_releases(out):
            raise DistillError(f"--out {out} is inside models/, which holds the releases: write "
                               "the report elsewhere, e.g. --out runs/releases.")
        return out
    if len(runs) == 1 and runs[0].is_dir() and not is_in_releases(runs[0]):
        return runs[0]
    return Path("runs")
