"""The `distill` command: parses options, calls the library, prints with rich."""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from distill.allocator import keep_freed_memory
from distill.bounds import MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_SEED
from distill.distributed import is_rank_zero
from distill.errors import DistillError
from distill.files import shipped_or_given, shipped_or_given_all

if TYPE_CHECKING:
    from distill.recipes import Recipe

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


def shipped_or_given_option(path: Path | None) -> Path | None:
    """For an option naming a network: a release a wheel ships where the path names one."""
    return None if path is None else shipped_or_given(path)


DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Folder with the dataset's files, e.g. the four MNIST IDX files (default: "
                       "$DISTILL_DATA_DIR for MNIST, $DISTILL_FASHION_MNIST_DIR for Fashion-MNIST, "
                       "else ~/.cache/distill/NAME, downloaded when missing).", show_default=False)]
DatasetOption = Annotated[str | None, typer.Option(
    "--dataset", help="mnist, fashion-mnist, or a folder of images with one subfolder per class "
                      "(in train/, test/ and val/ trees, as far as you have them, or in the "
                      "folder itself; without test/, a fixed share is held out for testing).",
    show_default=False)]
ImageSize = Annotated[int | None, typer.Option(
    min=8, max=256, help="Size a side a folder's images are decoded at, each whole picture "
                         "stretched to a square (default 28).",
    show_default=False)]
StudentImageSize = Annotated[int | None, typer.Option(
    min=8, max=256, help="Size a side a folder's images are decoded at, each whole picture "
                         "stretched to a square (default: the size its teacher was trained at).",
    show_default=False)]
Accelerator = Annotated[str, typer.Option(help="Where to train: auto, cpu, cuda or mps.")]
Devices = Annotated[int, typer.Option(
    min=1, max=1024, help="Processes on this machine, one a device (GPU, or CPU core): DDP "
                          "past one, each process taking its share of every batch.")]
NumNodes = Annotated[int, typer.Option(
    min=1, max=1024, help="Machines, each running the same command (docs/multi-node.md).")]
Strategy = Annotated[str, typer.Option(
    help="Lightning's strategy: auto (DDP when there is more than one process) or ddp.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a finished run in --out.")]
StudentOverwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the recipe's finished runs in RUNS: the student's, and its twin's "
                        "unless --no-twin.")]
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
_started = 0.0


def command_line() -> str:
    """The command as the user typed it, for the report."""
    return "distill " + shlex.join(_argv)


@app.command()
def teacher(
    recipe_name: Annotated[str | None, typer.Option(
        "--recipe", help="Teacher recipe: a name or a YAML file's path (default: teacher, or the "
                         "dataset's own, e.g. teacher-fashion-mnist for --dataset fashion-mnist; "
                         "`distill recipes teacher` shows one). The options below override its "
                         "fields.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder to write (default: runs/teacher; for another dataset, "
             "runs/DATASET/teacher).", show_default=False)] = None,
    data_dir: DataDir = None,
    epochs: Annotated[int | None, typer.Option(
        min=1, max=MAX_EPOCHS, help="Maximum number of epochs (default: the recipe's).",
        show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, max=MAX_BATCH, help="Images per training step (default: the recipe's); the "
                                   "learning rate scales with it linearly.", show_default=False)] = None,
    lr: Annotated[float | None, typer.Option(
        min=0, max=MAX_LR, help="Peak learning rate of AdamW at the recipe's batch size "
                                "(default: the recipe's).", show_default=False)] = None,
    compile: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the network: slower start, faster steps on GPUs.")] = False,
    init: Annotated[Path | None, typer.Option(
        "--init", help="Start from the weights of this run folder or weights file (the same "
                       "network, for this dataset's classes and channels) instead of a random "
                       "initialisation: the recipe's schedule runs again from there (a warm "
                       "restart, or fine-tuning).",
        show_default=False, callback=shipped_or_given_option)] = None,
    patience: Annotated[int | None, typer.Option(
        min=1, max=MAX_EPOCHS, help="Epochs without a better validation loss before stopping "
                                    "early (default: the recipe's).", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        min=0, max=MAX_SEED, help="Seed of initialisation, shuffling, augmentation (default: "
                                  "the recipe's).", show_default=False)] = None,
    augment: Annotated[float, typer.Option(
        min=0, max=4, help="Strength of the training augmentation: the recipe's (by default the "
                    "dataset's teacher augmentation; for MNIST rotations up to 30 degrees, shifts "
                    "and zooms up to 20%, each image's times a magnitude of its own) times this. "
                    "0: none.")] = 1.0,
    dataset: DatasetOption = None,
    image_size: ImageSize = None,
    views: Annotated[int | None, typer.Option(
        min=1, max=8, help="Augmented copies of each image in a training batch (batch "
                           "augmentation; default: the recipe's): the first at its random magnitude, "
                           "the others across the full ranges. Same number of steps, each VIEWS "
                           "times the work.", show_default=False)] = None,
    accelerator: Accelerator = "auto",
    devices: Devices = 1,
    num_nodes: NumNodes = 1,
    strategy: Strategy = "auto",
    overwrite: Overwrite = False,
    resume: Resume = False,
    progress: Progress = None,
    train_batches: TrainBatches = None,
    val_batches: ValBatches = None,
    test_images: TestImages = None,
) -> None:
    """Train the DigitNet teacher (on MNIST unless --dataset) and write its run folder."""
    from distill.compare import teacher_identity
    from distill.datasets import runs_subfolder
    from distill.datasets.folder import check_no_data_dir, check_runs_outside
    from distill.distributed import Parallel, check_parallel, is_rank_zero
    from distill.recipes import load_recipe, overridden, recipe_for
    from distill.runs import check_run_dir, train_run
    from distill.training import Limits

    recipe = load_recipe(recipe_name or recipe_for("teacher", dataset))
    if recipe_name is None:
        say_dataset_recipe("teacher", recipe)
    if recipe.role != "teacher":
        raise DistillError(f"{recipe.name} is a student recipe: distill it with `distill student "
                           f"--recipe {recipe.name}`, or give `distill teacher` a recipe with "
                           "`role: teacher` (recipes/teacher.yaml).")
    recipe, given = overridden(recipe, epochs=epochs, batch_size=batch_size, lr=lr,
                               patience=patience, seed=seed, views=views, dataset=dataset,
                               image_size=image_size), recipe
    check_no_data_dir(recipe.dataset, data_dir)
    out = out or Path("runs") / runs_subfolder(recipe.dataset) / "teacher"
    check_runs_outside(recipe.dataset, out, "--out")
    if is_rank_zero():  # before a folder's minutes of decoding (train_run checks it again)
        check_run_dir(out, overwrite, resume, recipe.dataset, recipe.image_size)
    parallel = Parallel(devices, num_nodes, strategy)
    check_parallel(parallel, accelerator, recipe.batch_size)
    say_another_dataset(given, recipe)
    recipe = fit_to_folders([recipe], epochs is not None, quick_trial=train_batches is not None,
                            patience_given=patience is not None)[0]
    config = dataclasses.replace(recipe.train_config(augment_strength=augment), compile=compile,
                                 init=None if init is None else str(init))
    limits = Limits(train_batches=train_batches, val_batches=val_batches, test_size=test_images)
    # The digest names the starting weights for good: the path may hold others later (a release
    # replaced by the run that started from it).
    extra = {"recipe": recipe.name, **({} if init is None else
                                        {"init_sha256": teacher_identity(str(init))})}
    report = train_run("teacher", out, config, command_line(), data_dir, limits,
                       accelerator, overwrite, show_progress(progress), resume,
                       extra=extra, parallel=parallel)
    print_summary(report, out)


@app.command()
def student(
    recipe_names: Annotated[list[str] | None, typer.Option(
        "--recipe", metavar="<str>",
        help="Recipe name (see `distill recipes`), path of a recipe YAML file, or `all` (every "
             "student recipe, each in --dataset's own version where it has one, e.g. "
             "tiny-fashion-mnist for tiny). Repeat it "
             "to distill several in one go: they share the teacher's logits (see "
             "--teacher-cache). Default: tiny, or the dataset's own (tiny-fashion-mnist for "
             "--dataset fashion-mnist).", show_default=False)] = None,
    teachers: Annotated[list[Path] | None, typer.Option(
        "--teacher", help="Teacher run folder or weights file: a DigitNet, or any network distill "
                          "trained (a student can teach a smaller one); repeat it to distill from "
                          "the mean of several teachers' logits (default: the recipe's `teachers`, "
                          "else RUNS/teacher if it is finished, else the dataset's released teacher, "
                          "models/digitnet or models/digitnet.fashion_mnist).",
        show_default=False, callback=shipped_or_given_all)] = None,
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
    image_size: StudentImageSize = None,
    seed: Annotated[int | None, typer.Option(
        min=0, max=MAX_SEED, help="Override the recipe's seed.", show_default=False)] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Run every recipe with each of these seeds, e.g. 0-4 or 0,2,5, seed N in RUNS/seedN/; "
             "then `distill report RUNS` gives each recipe's gain over its twin with a 95% "
             "interval.", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(
        min=1, max=MAX_EPOCHS, help="Override the recipe's epochs.", show_default=False)] = None,
    accelerator: Accelerator = "auto",
    devices: Devices = 1,
    num_nodes: NumNodes = 1,
    strategy: Strategy = "auto",
    overwrite: StudentOverwrite = False,
    resume: Resume = False,
    progress: Progress = None,
    train_batches: TrainBatches = None,
    val_batches: ValBatches = None,
    test_images: TestImages = None,
) -> None:
    """Distill the teacher into the student of a recipe, and train the student's twin."""
    from distill.datasets import get_dataset, runs_subfolder
    from distill.datasets.folder import check_no_data_dir, check_runs_outside
    from distill.distributed import Parallel, check_parallel
    from distill.files import RUN_MARKER
    from distill.pipeline import (
        at_teachers_size,
        check_student_dirs,
        check_teacher,
        check_transfer_set,
        default_teacher,
        parse_seeds,
        train_student,
    )
    from distill.recipes import Recipe, available_recipes, load_recipe, overridden, recipe_for
    from distill.training import Limits

    if seed is not None and seeds is not None:
        raise DistillError("Give --seed or --seeds, not both.")
    named, recipe_names = bool(recipe_names), recipe_names or [recipe_for("tiny", dataset)]
    every = "all" in recipe_names
    names = list(available_recipes()) if every else list(dict.fromkeys(recipe_names))
    chosen = [load_recipe(name) for name in names]  # a misspelt name fails before any training
    if not named:
        say_dataset_recipe("tiny", chosen[0])
    if every:  # MNIST's students, each in the dataset's own version where it has one
        loaded = {recipe.name: recipe for recipe in chosen}
        chosen = [loaded[recipe_for(recipe.name, dataset)] for recipe in chosen
                  if recipe.dataset == Recipe.dataset and recipe.role != "teacher"]
        # The shortest first, so that results come early: each epoch of teacher logits is computed
        # once whatever the order, and the longest recipe then adds the epochs it lacks.
        chosen.sort(key=lambda recipe: (recipe.schedule.epochs, recipe.name))
    elif teacher_recipes := [recipe.name for recipe in chosen if recipe.role == "teacher"]:
        raise DistillError(f"{teacher_recipes[0]} is a teacher recipe: train it with "
                           f"`distill teacher --recipe {teacher_recipes[0]}`.")
    if dataset is None and len(on := {recipe.dataset: recipe.name for recipe in chosen}) > 1:
        (first, one), (second, other) = list(on.items())[:2]
        raise DistillError(f"{one} is a recipe for {first} and {other} for {second}: distill one "
                           f"dataset at a time, or give --dataset to train both on one.")
    given, chosen = chosen, [overridden(recipe, epochs=epochs, dataset=dataset,
                                        image_size=image_size) for recipe in chosen]
    if runs_dir is None:
        runs_dir = Path("runs") / runs_subfolder(chosen[0].dataset)
    for recipe in chosen:
        check_no_data_dir(recipe.dataset, data_dir)
        check_runs_outside(recipe.dataset, runs_dir, "--runs")
    if (runs_dir / RUN_MARKER).is_file():  # e.g. `distill teacher --out runs/photos`
        raise DistillError(f"{runs_dir} is a run's own folder: students' runs go beside it, not "
                           f"into it. Give --runs another folder (e.g. --runs {runs_dir}-students).")

    def planned(recipes: list[Recipe]) -> list[tuple[Recipe, Path]]:
        """(recipe, runs folder) in the order they train: seed by seed, so that every recipe of
        a seed shares its teacher logits and its twins."""
        return [(dataclasses.replace(recipe, seed=s), runs_dir / f"seed{s}")
                for s in parse_seeds(seeds) for recipe in recipes] if seeds is not None else [
            (recipe if seed is None else dataclasses.replace(recipe, seed=seed), runs_dir)
            for recipe in recipes]

    plan = planned(chosen)
    for recipe, folder in plan:  # the last recipe's clash is found before the first one trains
        check_student_dirs(recipe, folder, twin, overwrite, resume, image_size)
    teachers_of = {recipe.name: teachers or [shipped_or_given(Path(t)) for t in recipe.teachers] or [
        default_teacher(runs_dir, recipe.dataset, recipe.image_size)] for recipe in chosen}
    for path in dict.fromkeys(path for paths in teachers_of.values() for path in paths):
        check_teacher(path)  # as the run folders, before a folder's minutes of decoding
    chosen = [at_teachers_size(recipe, teachers_of[recipe.name], image_size is not None)
              for recipe in chosen]
    parallel = Parallel(devices, num_nodes, strategy)
    for recipe, _ in plan:
        check_parallel(parallel, accelerator, recipe.batch_size)
    for recipe in chosen:  # before a folder's summary and minutes of decoding
        check_transfer_set(list(recipe.data.exclude_classes),
                           get_dataset(recipe.dataset, recipe.image_size), recipe.name)
    for recipe, changed in zip(given, chosen, strict=True):
        say_another_dataset(recipe, changed)
    plan = planned(fit_to_folders(chosen, epochs is not None, train_batches is not None,
                                  batch_option=False))
    limits = Limits(train_batches=train_batches, val_batches=val_batches, test_size=test_images)
    for recipe, folder in plan:
        paths = teachers_of[recipe.name]
        if paths[0].name == "weights.safetensors" and not teachers and not recipe.teachers:
            console.print(f"No finished teacher in {runs_dir / 'teacher'}: distilling the released "
                          f"teacher {paths[0]}.")
        reports = train_student(recipe, paths, folder, command_line(), twin, teacher_cache,
                                finished=lambda report: print_summary(report,
                                                                      Path(report["run_dir"])),
                                data_dir=data_dir, limits=limits, accelerator=accelerator,
                                overwrite=overwrite, progress=show_progress(progress),
                                resume=resume, parallel=parallel)
        if reports[0].get("gain_over_twin") is not None:
            console.print(Text.assemble(
                "Student against its twin: ", (f"{100 * reports[0]['gain_over_twin']:+.2f}", "bold"),
                f" points of test top-1 (recipe {recipe.name}, seed {recipe.seed})."))
    if len(plan) > 1:
        # A count of runs would leave out the twins, which recipes of one network share.
        runs = ("Both students" if len(plan) == 2 else f"All {len(plan)} students") + (
            " and their twins" if twin else "")
        console.print(f"{runs} side by side, with each recipe's gain over its twin: "
                      f"distill report {runs_dir}")


def say_dataset_recipe(default: str, recipe: Recipe) -> None:
    """A command that took the dataset's own recipe in place of its default says so."""
    if recipe.name != default:
        console.print(f"{recipe.dataset} has a {default} recipe of its own: {recipe.name} "
                      f"({recipe.schedule.epochs} epochs; --recipe {default} for MNIST's).")


def say_another_dataset(recipe: Recipe, changed: Recipe) -> None:
    """--dataset of another dataset than the recipe's trains with that dataset's augmentation
    (digits' rotations do not suit clothes); the recipe's file says otherwise, so say so. Where
    the recipe has a version measured on that dataset (tiny-fashion-mnist for tiny), name it:
    settings chosen on digits can lose to the twin on clothes."""
    from distill.recipes import recipe_for

    if recipe.augmentation is not None and changed.augmentation is None:
        console.print(f"Recipe {recipe.name}'s augmentation is for {recipe.dataset}: on "
                      f"{changed.dataset} it trains with that dataset's own "
                      f"({changed.train_config().augment}).")
    own = recipe_for(recipe.name, changed.dataset)
    if changed.dataset != recipe.dataset and own != recipe.name:
        console.print(f"Recipe {recipe.name}'s settings were chosen on {recipe.dataset}; {own} "
                      f"holds those measured on {changed.dataset} (--recipe {own}).")


FEW_STEPS = 200  # MNIST's shortest recipe takes 4,290; a small folder can make a few dozen
ENOUGH_STEPS = 1_000


def fit_to_folders(recipes: list[Recipe], epochs_given: bool, quick_trial: bool = False,
                   batch_option: bool = True, patience_given: bool = False) -> list[Recipe]:
    """A folder of one's own images: what distill found in it, before any training on it. A
    recipe's epochs are MNIST-sized: where they would make too few steps on the folder to learn,
    the recipe trains for enough (its patience scaled alike, unless --patience said it), unless
    --epochs said how many.
    batch_option: whether the command has --batch-size (`distill student` takes the recipe's)."""
    from distill.datasets import get_dataset
    from distill.datasets.folder import FolderDataset

    datasets = [get_dataset(recipe.dataset, recipe.image_size) for recipe in recipes]
    for dataset in dict.fromkeys(datasets):
        if isinstance(dataset, FolderDataset):
            console.print(dataset.summary())
    smaller_batch = "--batch-size" if batch_option else "batch_size in a recipe of your own"
    fitted = []
    for recipe, dataset in zip(recipes, datasets, strict=True):
        images = dataset.training_images() if isinstance(dataset, FolderDataset) else 0
        per_epoch = images // recipe.batch_size  # the last, partial batch is dropped
        epochs, patience = recipe.schedule.epochs, recipe.schedule.patience
        # per_epoch 0: the batch check's to refuse
        if quick_trial or not per_epoch or (steps := per_epoch * epochs) >= FEW_STEPS:
            fitted.append(recipe)
            continue
        made = (f"{recipe.name}: {epochs} epoch{'s' * (epochs > 1)} of {images:,} images in "
                f"batches of {recipe.batch_size} {'make' if epochs_given else 'would make'} only "
                f"{steps} step{'s' * (steps > 1)}, few to learn from")
        more = min(MAX_EPOCHS, math.ceil(ENOUGH_STEPS / per_epoch))
        if epochs_given:
            console.print(f"{made}: give more --epochs (about {more} for {ENOUGH_STEPS:,} "
                          f"steps), or a smaller {smaller_batch}.")
            fitted.append(recipe)
            continue
        if not patience_given:
            patience = min(more, math.ceil(patience * more / epochs))
        console.print(f"{made}: it trains for up to "
                      f"{more} epochs ({more * per_epoch:,} steps; patience {patience} epochs). "
                      "--epochs sets another number.")
        fitted.append(dataclasses.replace(recipe, schedule=dataclasses.replace(
            recipe.schedule, epochs=more, patience=patience)))
    return fitted


def show_progress(asked: bool | None) -> bool:
    """Bars in a terminal; in a log file their redrawn frames would bury the epoch lines."""
    return console.is_terminal if asked is None else asked


def print_summary(report: dict, out: Path) -> None:
    from distill.report import class_names, human, percent, transfer_lines

    ev, c, t = report["evaluation"], report["cost"], report["training"]
    top = 2 if len(class_names(report)) > 2 else 1  # the top-2 of two classes is always 100%
    console.print(Text.assemble(
        (report["name"], "bold"), f" ({report['model']}, {c['parameters']:,} parameters, "
        f"{human(c['flops'])} FLOPs/image): test top-1 ",
        (percent(ev["test"]["top1"]), "bold green"),
        f", augmented test top-{top} {percent(ev['augmented_test'][f'top{top}'])}; "
        f"{t['epochs_run']} epoch{'s' * (t['epochs_run'] != 1)} in {t['seconds']:.0f} s on "
        f"{t['device']}."))
    for line in transfer_lines(report):  # few labels, classes never seen
        console.print(line)
    if scores := report.get("init_validation"):  # --init: did the run beat where it began?
        start, kept = scores["start"], scores["kept"]
        console.print(f"Validation loss {kept['loss']:.4f} (top-1 {percent(kept['top1'])}) "
                      f"against its starting weights' {start['loss']:.4f} "
                      f"({percent(start['top1'])}): "
                      f"{'better' if kept['loss'] < start['loss'] else 'no better'}.")
    if (out / "report.json").stat().st_mtime < _started:  # --resume found it finished
        console.print(f"Kept {out}/ as it was: it had finished before (--resume trains only what "
                      "is unfinished; --overwrite trains it again).")
        return
    console.print(f"Wrote {out}/: report.md, report.json, weights.safetensors, curves.png, "
                  "confusion.png, examples.png, checkpoints/")


def quiet_lightning() -> None:
    """Lightning's start-up notes (devices, tips) and a deprecation inside Lightning itself say
    nothing the user can act on; the command prints its own summary instead."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    # On CUDA every run also logged "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]" (seen on an H200).
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # The frozen teacher is in eval mode on purpose while the student trains.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    # A resumed run writes into its own checkpoint folder on purpose.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # A small folder dataset has fewer steps an epoch than the step metrics' interval; the epoch's
    # metrics, which the command prints and plots, are logged all the same.
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than "
                            r"the logging interval")


def plain_warnings() -> None:
    """distill's own warnings (a folder's unreadable files skipped) in one line, without the
    file, line number and source line that Python adds for a programmer."""
    import warnings

    python_format = warnings.formatwarning
    if getattr(python_format, "distill", False):
        return
    package = Path(__file__).resolve().parent

    def formatted(message, category, filename, lineno, line=None) -> str:
        if Path(filename).resolve().is_relative_to(package):
            return f"Warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    formatted.distill = True
    warnings.formatwarning = formatted


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one red line and exit code 1; --debug shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    global _argv, _started
    _argv, _started = args, time.time()  # a run whose report is older had finished before
    if option := empty_argument(args):
        console.print(Text.assemble(("Error: ", "bold red"), f"{option} is empty (a shell "
                                    "variable that is not set?): give it a value, or leave it "
                                    "out."), highlight=False)
        sys.exit(1)
    keep_freed_memory()  # before torch allocates: each training step reuses the last one's memory
    quiet_lightning()
    plain_warnings()
    if not is_rank_zero():
        # The other processes of a multi-device run go through the same steps: their lines
        # would repeat rank zero's. Errors still show (stderr).
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        console.quiet = True
    try:
        app(args=args, prog_name="distill")
    except SystemExit as done:  # click ends every run with SystemExit, success included
        if ctrl_c(done):  # typer turns a Ctrl-C into exit 130, without a word
            say_interrupted()
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
        say_interrupted()
        sys.exit(130)


def empty_argument(args: list[str]) -> str | None:
    """The option given an empty value (`--runs "$RUNS"` with RUNS unset, `--out=`), else None.
    Every value distill takes names something; an empty one read as a path is the current
    folder (runs written there, MNIST downloaded there), read as a dataset MNIST."""
    for k, arg in enumerate(args):
        if arg.startswith("--") and arg.endswith("="):
            return arg[:-1]
        if not arg.strip():
            return args[k - 1] if k and args[k - 1].startswith("-") else "An argument"
    return None


def ctrl_c(error: BaseException | None) -> bool:
    """Whether a Ctrl-C is among the exceptions that led to this one."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False


def say_interrupted() -> None:
    console.print(Text.assemble(("Interrupted. ", "bold red"), "Nothing finished was overwritten."))


def describe_os_error(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}. Check the path and its permissions, and run again."


# The commands on trained networks and the tables live in modules of their own; importing them
# registers them.
from distill import cli_tables  # noqa: E402, F401, I001 - imported in `distill --help` order
from distill import cli_models  # noqa: E402, F401, I001
