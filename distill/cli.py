"""The `distill` command: parses options, calls the library, prints with rich."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from distill.bounds import MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_SEED
from distill.errors import DistillError

app = typer.Typer(help="Train a strong teacher, distill it into tiny students, and measure what "
                       "each keeps and what it costs (MNIST, Fashion-MNIST or your images).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
# Output piped to a file or a pager has no width of its own, and rich would squeeze the report's
# fourteen columns into 80; a terminal keeps its real width (or COLUMNS, where set).
# No markup: file names and messages are printed as they are ("[onnx]" stays, a path with
# brackets cannot break the output); emphasis goes through rich Text styles instead.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 180,
                  markup=False)
DEBUG_ENV = "DISTILL_DEBUG"
# Two augmented copies of each image a step (batch augmentation), the second across the full
# ranges: same steps, twice the compute, the only setting that reached 99.8% augmented top-2
# (docs/results.md, the teacher's table).
TEACHER_VIEWS = 2

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Folder with the dataset's files, e.g. the four MNIST IDX files (default: "
                       "$DISTILL_DATA_DIR for MNIST, $DISTILL_FASHION_MNIST_DIR for Fashion-MNIST, "
                       "else ~/.cache/distill/NAME, downloaded when missing).", show_default=False)]
DatasetOption = Annotated[str | None, typer.Option(
    "--dataset", help="mnist, fashion-mnist, or a folder of images with one subfolder per class "
                      "(train/ and test/ inside, or one tree of which a fixed share is held out "
                      "for testing).", show_default=False)]
ImageSize = Annotated[int | None, typer.Option(
    min=8, max=256, help="Size a folder's images are decoded at (default 28).",
    show_default=False)]
Accelerator = Annotated[str, typer.Option(help="Where to train: auto, cpu, cuda or mps.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a finished run in --out.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue an interrupted run from its last finished epoch.")]
Progress = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="Show progress bars (default: when the output is a terminal; "
    "otherwise one line per epoch, for logs).", show_default=False)]
TrainBatches = Annotated[int | None, typer.Option(
    min=1, help="Cap on training batches per epoch, for quick trials.", show_default=False)]
# 128: data.EVAL_BATCH, written out because the command imports torch only once it runs.
ValBatches = Annotated[int | None, typer.Option(
    min=1, help="Cap on validation batches (of 128 images) per epoch, for quick trials.",
    show_default=False)]
TestImages = Annotated[int | None, typer.Option(
    min=1, help="Score only the first N test images, for quick trials.", show_default=False)]


@app.callback()
def _root() -> None:
    """Keeps every command a subcommand (`distill teacher`), even while there is only one."""


_argv: list[str] = []


def command_line() -> str:
    """The command as the user typed it, for the report."""
    return "distill " + shlex.join(_argv)


@app.command()
def teacher(
    out: Annotated[Path | None, typer.Option(
        help="Run folder to write (default: runs/teacher; for another dataset, "
             "runs/DATASET/teacher).", show_default=False)] = None,
    data_dir: DataDir = None,
    epochs: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS,
                                        help="Maximum number of epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(
        min=1, max=MAX_BATCH, help="Images per training step; the learning rate scales with it "
                                   "(linearly, from --lr at 128).")] = 128,
    lr: Annotated[float, typer.Option(
        min=0, max=MAX_LR, help="Peak learning rate of AdamW for a batch of 128.")] = 4e-3,
    compile: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the network: slower start, faster steps on GPUs.")] = False,
    patience: Annotated[int, typer.Option(
        min=1, max=MAX_EPOCHS, help="Epochs without a better validation loss before stopping early.")] = 3,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED,
                                      help="Seed of initialisation, shuffling, augmentation.")] = 0,
    augment: Annotated[float, typer.Option(
        min=0, max=4, help="Strength of the training augmentation: the dataset's teacher "
                    "augmentation (for MNIST: rotations up to 30 degrees, shifts and zooms up to "
                    "20%, each image's times a magnitude of its own) times this. 0: none.")] = 1.0,
    dataset: DatasetOption = None,
    image_size: ImageSize = None,
    views: Annotated[int, typer.Option(
        min=1, max=8, help="Augmented copies of each image in a training batch (batch augmentation): "
                    "the first at its random magnitude, the others across the full ranges. Same "
                    "number of steps, each VIEWS times the work.")] = TEACHER_VIEWS,
    accelerator: Accelerator = "auto",
    overwrite: Overwrite = False,
    resume: Resume = False,
    progress: Progress = None,
    train_batches: TrainBatches = None,
    val_batches: ValBatches = None,
    test_images: TestImages = None,
) -> None:
    """Train the DigitNet teacher (on MNIST unless --dataset) and write its run folder."""
    from distill.datasets import get_dataset
    from distill.runs import train_run
    from distill.training import Limits, TrainConfig

    chosen = get_dataset(dataset or "mnist", image_size or 28)
    config = TrainConfig(model="digitnet", epochs=epochs, batch_size=batch_size,
                         lr=lr * batch_size / 128, patience=patience, seed=seed, compile=compile,
                         augment=chosen.teacher_augment.scaled(augment) if augment else None,
                         views=views if augment else 1, dataset=chosen.name,
                         image_size=image_size or 28)
    out = out or Path("runs") / chosen.folder_name / "teacher"
    limits = Limits(train_batches=train_batches, val_batches=val_batches, test_size=test_images)
    report = train_run("teacher", out, config, command_line(), data_dir, limits,
                       accelerator, overwrite, show_progress(progress), resume)
    print_summary(report, out)


@app.command()
def student(
    recipe_names: Annotated[list[str], typer.Option(
        "--recipe", metavar="<str>",
        help="Recipe name (see `distill recipes`), path of a recipe YAML file, or `all`. Repeat it "
             "to distill several in one go: they share the teacher's logits (see "
             "--teacher-cache).")] = ["tiny"],  # noqa: B006 - typer copies the default
    teachers: Annotated[list[Path] | None, typer.Option(
        "--teacher", help="Teacher run folder or weights file; repeat it to distill from the mean "
                          "of several teachers' logits (default: the recipe's `teachers`, else "
                          "RUNS/teacher if it is finished, else the released models/digitnet).",
        show_default=False)] = None,
    runs_dir: Annotated[Path | None, typer.Option(
        "--runs", help="Folder for the runs: student-RECIPE/ and student-RECIPE-twin/ (with "
                       "--seeds, one folder seedN/ each). Default: runs/, or runs/DATASET/ for "
                       "another dataset than MNIST.", show_default=False)] = None,
    twin: Annotated[bool, typer.Option(
        help="Also train the twin: the same recipe on labels alone, to measure what distillation "
             "bought. A finished twin already in RUNS trained the same way (distillation aside, "
             "e.g. by a recipe of another method) is used instead of training another.")] = True,
    teacher_cache: Annotated[bool, typer.Option(
        help="Compute the teacher's logits for every augmented view and for the validation and "
             "test images once, in RUNS/.cache, and reuse them (same results as running the "
             "teacher on every batch, faster).")] = True,
    data_dir: DataDir = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Distill on this dataset instead of the recipe's (mnist, fashion-mnist or "
                          "a folder of class subfolders), with that dataset's default "
                          "augmentation.", show_default=False)] = None,
    image_size: ImageSize = None,
    seed: Annotated[int | None, typer.Option(
        min=0, max=MAX_SEED, help="Override the recipe's seed.", show_default=False)] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Run every recipe with each of these seeds, e.g. 0-4 or 0,2,5, seed N in RUNS/seedN/; "
             "then `distill report RUNS` gives each recipe's gain over its twin with a 95% "
             "interval.", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(
        min=1, max=MAX_EPOCHS, help="Override the recipe's epochs.", show_default=False)] = None,
    accelerator: Accelerator = "auto",
    overwrite: Overwrite = False,
    resume: Resume = False,
    progress: Progress = None,
    train_batches: TrainBatches = None,
    val_batches: ValBatches = None,
    test_images: TestImages = None,
) -> None:
    """Distill the teacher into the student of a recipe, and train the student's twin."""
    import dataclasses

    from distill.datasets import get_dataset
    from distill.pipeline import check_student_dirs, default_teacher, parse_seeds, train_student
    from distill.recipes import available_recipes, load_recipe
    from distill.training import Limits

    if seed is not None and seeds is not None:
        raise DistillError("Give --seed or --seeds, not both.")
    every = "all" in recipe_names
    names = list(available_recipes()) if every else list(dict.fromkeys(recipe_names))
    chosen = [load_recipe(name) for name in names]  # a misspelt name fails before any training
    if every:
        # The shortest first, so that results come early: each epoch of teacher logits is computed
        # once whatever the order, and the longest recipe then adds the epochs it lacks.
        chosen.sort(key=lambda recipe: (recipe.schedule.epochs, recipe.name))
    if epochs is not None:
        chosen = [dataclasses.replace(recipe, schedule=dataclasses.replace(recipe.schedule,
                                                                           epochs=epochs))
                  for recipe in chosen]
    if dataset is not None or image_size is not None:
        # Another dataset than the recipe's: that dataset's augmentation, not the recipe's.
        named = get_dataset(dataset or chosen[0].dataset, image_size or 28).name
        chosen = [dataclasses.replace(recipe, dataset=named, image_size=image_size or 28,
                                      augmentation=None if named != recipe.dataset
                                      else recipe.augmentation) for recipe in chosen]
    if runs_dir is None:
        runs_dir = Path("runs") / get_dataset(chosen[0].dataset, chosen[0].image_size).folder_name
    # (recipe, runs folder) in the order they train: seed by seed, so that every recipe of a
    # seed shares its teacher logits and its twins.
    plan = [(dataclasses.replace(recipe, seed=s), runs_dir / f"seed{s}")
            for s in parse_seeds(seeds) for recipe in chosen] if seeds is not None else [
        (recipe if seed is None else dataclasses.replace(recipe, seed=seed), runs_dir)
        for recipe in chosen]
    for recipe, folder in plan:  # the last recipe's clash is found before the first one trains
        check_student_dirs(recipe, folder, twin, overwrite, resume)
    limits = Limits(train_batches=train_batches, val_batches=val_batches, test_size=test_images)
    for recipe, folder in plan:
        paths = teachers or [Path(t) for t in recipe.teachers] or [default_teacher(runs_dir)]
        if paths[0].name == "weights.safetensors" and not teachers and not recipe.teachers:
            console.print(f"No finished teacher in {runs_dir / 'teacher'}: distilling the released "
                          f"teacher {paths[0]}.")
        reports = train_student(recipe, paths, folder, command_line(), twin, teacher_cache,
                                finished=lambda report: print_summary(report,
                                                                      Path(report["run_dir"])),
                                data_dir=data_dir, limits=limits, accelerator=accelerator,
                                overwrite=overwrite, progress=show_progress(progress),
                                resume=resume)
        if reports[0].get("gain_over_twin") is not None:
            console.print(Text.assemble(
                "Distillation gained ", (f"{100 * reports[0]['gain_over_twin']:+.2f}", "bold"),
                f" points of test top-1 over the twin (recipe {recipe.name}, seed {recipe.seed})."))
    if len(plan) > 1:
        console.print(f"All {len(plan)} runs side by side, with each recipe's gain over its twin: "
                      f"distill report {runs_dir}")


@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe in full.",
                                                  show_default=False)] = None,
) -> None:
    """List the recipes with their students' sizes, or show one recipe."""
    import timm
    from rich.table import Table

    from distill.nets import parameter_count
    from distill.recipes import available_recipes, load_recipe

    if name is not None:
        recipe = load_recipe(name)
        console.print(available_recipes()[recipe.name].read_text() if recipe.name in
                      available_recipes() else Path(name).read_text())
        return
    table = Table(title="Recipes (recipes/*.yaml)")
    for column in ("recipe", "student", "parameters", "method", "epochs", "description"):
        table.add_column(column, justify="right" if column in ("parameters", "epochs")
                         else "left")
    for recipe_name in available_recipes():
        r = load_recipe(recipe_name)
        params = parameter_count(timm.create_model(r.student))
        settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in r.distillation.describe().items() if k != "method")
        table.add_row(recipe_name, r.student, f"{params:,}",
                      f"{r.distillation.method} ({settings})", str(r.schedule.epochs),
                      r.description)
    console.print(table)


@app.command()
def report(
    runs: Annotated[list[Path] | None, typer.Argument(
        help="Run folders, or folders of run folders (default: runs/).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Where to write comparison.md, comparison.json, gains.json and accuracy_vs_size.png "
             "(default: the single folder given, else runs/).", show_default=False)] = None,
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

    from distill.compare import GAIN_COLUMNS, gain_rows, gains_over_twins
    from distill.errors import DistillError
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
                        "seeds, 95% t-interval)", GAIN_COLUMNS, gain_rows(gains))
    target = out or (runs[0] if len(runs) == 1 and runs[0].is_dir() else Path("runs"))
    paths = write_comparison(reports, target)
    listed = [paths["markdown"], paths["json"], paths["gains"], paths["plot"]]
    if "labels curve" in paths:
        listed.append(paths["labels curve"])
    console.print(f"Wrote {', '.join(map(str, listed[:-1]))} and {listed[-1]}")


def show_progress(asked: bool | None) -> bool:
    """Bars in a terminal; in a log file their redrawn frames would bury the epoch lines."""
    return console.is_terminal if asked is None else asked


def print_summary(report: dict, out: Path) -> None:
    from distill.report import human, percent

    ev, c, t = report["evaluation"], report["cost"], report["training"]
    console.print(Text.assemble(
        (report["name"], "bold"), f" ({report['model']}, {c['parameters']:,} parameters, "
        f"{human(c['flops'])} FLOPs/image): test top-1 ",
        (percent(ev["test"]["top1"]), "bold green"),
        f", augmented test top-2 {percent(ev['augmented_test']['top2'])}; "
        f"{t['epochs_run']} epoch{'s' * (t['epochs_run'] != 1)} in {t['seconds']:.0f} s on "
        f"{t['device']}."))
    console.print(f"Wrote {out}/: report.md, report.json, weights.safetensors, curves.png, "
                  "confusion.png, examples.png, checkpoints/")


def quiet_lightning() -> None:
    """Lightning's start-up notes (devices, tips) and a deprecation inside Lightning itself say
    nothing the user can act on; the command prints its own summary instead."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # The frozen teacher is in eval mode on purpose while the student trains.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    # A resumed run writes into its own checkpoint folder on purpose.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one red line and exit code 1; --debug shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    global _argv
    _argv = args
    quiet_lightning()
    try:
        app(args=args, prog_name="distill")
    except SystemExit as done:  # click ends every run with SystemExit, success included
        if done.code not in (0, None):
            raise
    except (DistillError, OSError) as error:
        # An OSError is the machine's answer (a full disk, a folder without write permission):
        # its own message names the file and the reason.
        if debug:
            raise
        message = str(error) if isinstance(error, DistillError) else describe_os_error(error)
        console.print(Text.assemble(("Error: ", "bold red"), message), highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print(Text.assemble(("Interrupted. ", "bold red"),
                                    "Nothing finished was overwritten."))
        sys.exit(130)


def describe_os_error(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}. Check the path and its permissions, and run again."


# The commands on trained networks live in their own module; importing it registers them.
from distill import cli_models  # noqa: E402, F401
