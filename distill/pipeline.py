"""Distilling a recipe: its teachers, the student, the student's twin, over one or more seeds.

Every distilled student has a twin: the same network, recipe settings, seed and data order,
trained on labels alone, so a report can say what distillation itself bought. Twins are shared:
recipes that differ only in their method (tiny and tiny-dkd) compare against the same twin.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from distill.cache import teacher_clean_logits, teacher_logits_table
from distill.compare import teacher_identity
from distill.data import EVAL_BATCH, IMAGE_SIZE, validation_images
from distill.datasets import FOLDER_PREFIX, Dataset, get_dataset
from distill.datasets.base import shown_classes
from distill.datasets.folder import FolderDataset
from distill.distillation import Ensemble, Renormalized, check_features
from distill.distributed import is_rank_zero
from distill.errors import DistillError
from distill.export import (
    dataset_of,
    image_size_of,
    load_model,
    network_arguments,
    trained_dataset,
    weights_metadata,
)
from distill.metrics import predict_logits
from distill.nets import NETWORK_CLASSES, release_name, released_weights
from distill.recipes import Recipe
from distill.report import load_report, save_report
from distill.run_report import RunReport
from distill.runs import (
    FINISHED_MARKER,
    check_batch_size,
    check_run_dir,
    environment,
    train_run,
)
from distill.training import Limits, describe, normalized
from distill.transfer import bias_correction


def default_teacher(runs_dir: Path, dataset: str = "mnist", image_size: int = IMAGE_SIZE) -> Path:
    """The local teacher run if there is one, else the dataset's released teacher in models/
    (digitnet for MNIST, digitnet.fashion_mnist for Fashion-MNIST)."""
    local = runs_dir / "teacher"
    released = released_weights(release_name("digitnet", dataset))
    if (local / FINISHED_MARKER).is_file():
        return local
    if released.is_file() and image_size == IMAGE_SIZE:
        return released
    if (local / "weights.safetensors").is_file():
        return local
    raise DistillError(f"No teacher in {local}, and none released for {dataset}: train one "
                       f"first ({teacher_command(dataset, image_size)}), or give --teacher.")


def check_folder_unchanged(path: Path, dataset: FolderDataset) -> Dataset:
    """The folder as the teacher at `path` was trained on it (its classes and normalization).
    The folder may have changed since: a class added or removed, or images now read in another
    number of channels, is refused (the teacher cannot answer them); other images change what
    the teacher sees, which is said in a line when they are many."""
    taught = trained_dataset(path, images=False)
    kwargs = network_arguments(weights_metadata(path)) or {}
    count, channels = kwargs.get("num_classes", 10), kwargs.get("in_chans", 1)
    if taught.classes != dataset.classes or count != dataset.num_classes:
        raise DistillError(f"The teacher {path} answers for {count} classes "
                           f"({shown_classes(taught.classes)}), and {dataset.root} now has "
                           f"{shown_classes(dataset.classes)}: train the teacher again "
                           f"({teacher_command(dataset.name, dataset.size)} --overwrite).")
    if channels != dataset.channels:
        def mode(count: int) -> str:
            return "grayscale" if count == 1 else "RGB"

        raise DistillError(f"The teacher {path} reads {mode(channels)} images, and "
                           f"{dataset.root} is now read as {mode(dataset.channels)} (its images' "
                           f"modes changed): train the teacher again "
                           f"({teacher_command(dataset.name, dataset.size)} --overwrite).")
    moved = max(abs(a - b) for a, b in zip(taught.mean + taught.std, dataset.mean + dataset.std))
    if moved > 0.01:  # a hundredth of the pixel range: a few new images move it far less
        print(f"{dataset.root} has changed since {path} was trained (its images' mean or "
              f"standard deviation moved by {moved:.4f}): the teacher reads them normalized as "
              "its own training images were; train it again if many of them are new.", flush=True)
    return taught


def read_as_taught(teacher: nn.Module, paths: list[Path], dataset: Dataset) -> nn.Module:
    """Each teacher of a folder, checked against the folder as it is now, reads the student's
    batches normalized as its own training images were: the folder's mean and spread move when
    its images change."""
    if not isinstance(dataset, FolderDataset):
        return teacher
    members = list(teacher.members) if isinstance(teacher, Ensemble) else [teacher]
    adapted = [Renormalized.between(member, dataset, check_folder_unchanged(path, dataset))
               for member, path in zip(members, paths, strict=True)]
    return adapted[0] if len(adapted) == 1 else Ensemble(adapted)


def training_device(accelerator: str) -> str:
    """Where the run trains, as Lightning chooses it: the teacher's pass for the logits cache
    runs there too (on a GPU, not on the CPU beside it)."""
    import torch

    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return "cuda"
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def teacher_command(dataset: str, image_size: int) -> str:
    """The command that trains a teacher of the dataset, as the user would type it."""
    return " ".join(["distill teacher",
                     *([f"--dataset {dataset.removeprefix(FOLDER_PREFIX)}"] if dataset != "mnist"
                       else []),
                     *([f"--image-size {image_size}"] if image_size != IMAGE_SIZE else [])])


def check_teachers_fit(recipe: Recipe, paths: list[Path]) -> None:
    """Refuse teachers trained on another dataset or image size than the recipe's student, as
    their weights say: before a folder's decoding."""
    inputs = {path: (dataset_of(path), image_size_of(path)) for path in paths}
    if len(set(inputs.values())) > 1:  # no --dataset or --image-size would suit them all
        listed = ", ".join(f"{path} ({name} at {size}x{size})" for path, (name, size) in inputs.items())
        raise DistillError(f"These teachers were trained on different images: {listed}. The mean "
                           "of their logits needs teachers of one dataset and image size.")
    for path in paths:
        if (taught := dataset_of(path)) != recipe.dataset:
            raise DistillError(f"The teacher {path} was trained on {taught}, and the recipe "
                               f"{recipe.name} distills on {recipe.dataset}: give --dataset "
                               f"{taught.removeprefix(FOLDER_PREFIX)} to distill on the teacher's, "
                               f"or a teacher of {recipe.dataset} "
                               f"({teacher_command(recipe.dataset, recipe.image_size)}).")
        if (size := image_size_of(path)) != recipe.image_size:
            raise DistillError(f"The teacher {path} was trained on {size}x{size} images, and the "
                               f"recipe {recipe.name} distills on {recipe.image_size}x"
                               f"{recipe.image_size}: give --image-size {size}, or a teacher "
                               f"trained at {recipe.image_size}.")


def at_teachers_size(recipe: Recipe, paths: list[Path], size_given: bool) -> Recipe:
    """The recipe at the image size its folder's teachers were trained at, where neither
    --image-size nor the recipe names one (a teacher of 64x64 photos distills at 64x64), said in
    a line; then its teachers checked against it (`check_teachers_fit`)."""
    sizes = {image_size_of(path) for path in paths}
    if (not size_given and recipe.image_size == IMAGE_SIZE and len(sizes) == 1
            and recipe.dataset.startswith(FOLDER_PREFIX) and dataset_of(paths[0]) == recipe.dataset
            and (size := sizes.pop()) != IMAGE_SIZE):
        print(f"The teacher {paths[0]} was trained on {size}x{size} images: {recipe.name} "
              f"distills at that size (--image-size gives another).", flush=True)
        recipe = dataclasses.replace(recipe, image_size=size)
    check_teachers_fit(recipe, paths)
    return recipe


def load_teacher(path: Path) -> nn.Module:
    """The teacher of a run folder or weights file: a DigitNet, or any network distill trained,
    such as a student teaching a smaller one (a teacher assistant, Mirzadeh et al. 2020)."""
    check_teacher(path)
    return load_model(path)[0]


def check_teacher(path: Path) -> None:
    weights = path / "weights.safetensors" if path.is_dir() else path
    if not weights.exists():
        raise DistillError(f"No teacher at {path}. Train one first with `distill teacher`, or "
                           "point --teacher at a finished run folder or weights file.")


def load_teachers(paths: list[Path]) -> nn.Module:
    """One teacher as it is; several as an `Ensemble` (the mean of their logits)."""
    teachers = [load_teacher(path) for path in paths]
    classes = {path: getattr(t, "num_classes", None) for path, t in zip(paths, teachers)}
    if len(set(classes.values())) > 1:
        listed = ", ".join(f"{path} ({count})" for path, count in classes.items())
        raise DistillError(f"The teachers answer with different numbers of classes: {listed}. "
                           "Give teachers of one dataset.")
    return teachers[0] if len(teachers) == 1 else Ensemble(teachers)


def student_dirs(recipe: Recipe, runs_dir: Path) -> tuple[Path, Path]:
    """The run folders of a recipe's student and of its twin."""
    return runs_dir / f"student-{recipe.name}", runs_dir / f"student-{recipe.name}-twin"


def check_student_dirs(recipe: Recipe, runs_dir: Path, twin: bool, overwrite: bool = False,
                       resume: bool = False, image_size: int | None = None) -> None:
    """Refuse, before any training, runs that would clobber finished or unfinished ones (rank
    zero's check: the other processes of a multi-device run start once its training has).
    `image_size`: the students', once known (a recipe that names none takes its teacher's)."""
    if not is_rank_zero():
        return
    student_dir, twin_dir = student_dirs(recipe, runs_dir)
    for out in (student_dir, twin_dir) if twin else (student_dir,):
        check_run_dir(out, overwrite, resume, recipe.dataset, image_size)


def find_twin(runs_dir: Path, config: dict, test_images: int) -> tuple[Path, RunReport] | None:
    """A finished twin in `runs_dir` trained with exactly these settings, if there is one."""
    for path in sorted(runs_dir.glob(f"*/{FINISHED_MARKER}")):
        report = load_report(path.parent)
        if (report is not None and report.get("kind") == "twin"
                and normalized(report.get("config", {})) == config
                and report["evaluation"]["test_images"] == test_images):
            return path.parent, report
    return None


def train_student(recipe: Recipe, teacher_paths: list[Path], runs_dir: Path, command: str,
                  twin: bool = True, teacher_cache: bool = True,
                  finished: Callable[[RunReport], None] | None = None, **run_args
                  ) -> list[RunReport]:
    """Distill the recipe's student from its teachers and train its twin, unless one trained the
    same way is already in `runs_dir` (or `twin` is False). Returns the reports written.

    With `teacher_cache`, the teachers' logits come from runs_dir/.cache (computed there once);
    a method that needs the teachers' features runs them on every batch instead.
    `finished` is called with each run's report as soon as that run is done.
    """
    environment()  # the commit is taken before the teacher's logits, which may take long
    teacher = load_teachers(teacher_paths)
    method = recipe.distillation.build(recipe.seed)
    check_features(method, NETWORK_CLASSES[recipe.network], teacher)  # before any folder is made
    if twin and recipe.data.labeled_fraction == 0:
        print("No twin: with data.labeled_fraction 0 there is no label to train it on.",
              flush=True)
        twin = False
    student_dir, twin_dir = student_dirs(recipe, runs_dir)
    overwrite, resume = run_args.get("overwrite", False), run_args.get("resume", False)
    check_student_dirs(recipe, runs_dir, twin, overwrite, resume,  # before the teacher's logits
                       recipe.image_size)
    config = recipe.train_config()
    check_teachers_fit(recipe, teacher_paths)
    dataset = get_dataset(config.dataset, config.image_size)
    teacher = read_as_taught(teacher, teacher_paths, dataset)
    check_transfer_set(config.exclude_classes, dataset, recipe.name)
    limits = run_args.get("limits") or Limits()
    data_dir = run_args.get("data_dir")
    # Before the teacher's logits:
    check_batch_size(config.batch_size, limits, dataset.training_images(data_dir),
                     f"give a recipe of your own (distill recipes {recipe.name} prints this one) "
                     "a smaller batch_size")
    test_images = dataset.load("test", data_dir)[0][: limits.test_size]
    # The teachers' digests name them for good: a path like runs/teacher may hold another
    # teacher on another day.
    extra = {"recipe": recipe.name, "teacher": ", ".join(map(str, teacher_paths)),
             "teacher_sha256": ", ".join(teacher_identity(str(path)) for path in teacher_paths)}
    cache = runs_dir / ".cache"
    predictions = (teacher_clean_logits(teacher, test_images, cache, dataset) if teacher_cache
                   else predict_logits(teacher, test_images, dataset=dataset)).argmax(-1)

    def args_for(out: Path) -> dict:  # --resume also starts the run an interruption came before
        started = (out / "logs").is_dir() or (out / FINISHED_MARKER).is_file()
        return {**run_args, "resume": resume and started}

    # A student kept by --resume needs no teacher logits: with several recipes, or a cleared
    # cache, that can be a whole teacher pass saved.
    logits = validation_logits = None
    if teacher_cache and not method.needs_features and not (
            resume and (student_dir / FINISHED_MARKER).is_file()):
        # The epochs a run trains before it may stop early (the warm-up, or the patience) first;
        # the others when it reaches them.
        ahead = max(math.ceil(config.warmup * config.epochs), config.patience + 1)
        table = functools.partial(teacher_logits_table, teacher, config, limits, cache, data_dir,
                                  device=training_device(run_args.get("accelerator", "auto")),
                                  progress=run_args.get("progress", True), method=method,
                                  ahead=ahead)
        # With several processes the table is computed once they all run, each taking its
        # share of the epochs (`Distiller.setup`); alone, now, before any folder is made.
        parallel = run_args.get("parallel")
        logits = table if parallel is not None and parallel.world_size > 1 else table()
        validation_logits = teacher_clean_logits(
            teacher, validation_slice(data_dir, limits, dataset, config.exclude_classes), cache,
            dataset)
    elif method.needs_features:
        print(f"Method {method.name} reads the teacher's feature maps: the teacher runs on every "
              "batch (no logits cache).", flush=True)
    finished = finished or (lambda report: None)
    omitted = config.exclude_classes
    if omitted:  # what the teacher answers on the validation images, for the bias correction
        # Every validation image, the omitted classes' too: their labels are not read.
        images = validation_slice(data_dir, limits, dataset)
        teacher_validation = (teacher_clean_logits(teacher, images, cache, dataset)
                              if teacher_cache else predict_logits(teacher, images,
                                                                   dataset=dataset))
        test_labels = dataset.load("test", data_dir)[1][: limits.test_size]

    def with_omitted(report: RunReport) -> RunReport:
        if omitted:
            record_omitted(report, Path(report["run_dir"]), images, teacher_validation,
                           test_images, test_labels, dataset)
        return report

    student = with_omitted(train_run(
        f"student-{recipe.name}", student_dir, config, command, teacher=teacher,
        distillation=recipe.distillation, teacher_logits=logits,
        validation_logits=validation_logits, teacher_predictions=predictions, extra=extra,
        **args_for(student_dir)))
    finished(student)
    reports = [student]
    # --overwrite retrains the twin too, unless --no-twin keeps it.
    shared = None if overwrite and twin else find_twin(runs_dir, describe(config), len(test_images))
    if twin and shared is None:
        reports.append(with_omitted(train_run(f"student-{recipe.name}-twin", twin_dir, config,
                                              command, teacher_predictions=predictions,
                                              extra=extra, **args_for(twin_dir))))
        finished(reports[1])
        shared = twin_dir, reports[1]
    if shared is not None and is_rank_zero():
        record_gain(student, student_dir, *shared)
    return reports


def validation_slice(data_dir: Path | str | None, limits: Limits, dataset: Dataset,
                     exclude_classes: list[int] | tuple[int, ...] = ()) -> Tensor:
    """The validation images a run sees (the excluded classes' left out), in its order."""
    images = validation_images(data_dir, dataset, exclude_classes)
    return images if limits.val_batches is None else images[: limits.val_batches * EVAL_BATCH]


def check_transfer_set(excluded: list[int], dataset: Dataset, recipe: str) -> None:
    classes = len(dataset.classes)
    if any(c >= classes for c in excluded) or len(excluded) >= classes:
        raise DistillError(f"Recipe {recipe}: data.exclude_classes {excluded} must name some "
                           f"of the {classes} classes of {dataset.name} (0 to {classes - 1}: "
                           f"{shown_classes(dataset.classes)}), not all of them. Give a recipe "
                           f"of your own (`distill recipes {recipe}` prints this one).")


def record_omitted(report: RunReport, out: Path, validation: Tensor, teacher_validation: Tensor,
                   test_images: Tensor, test_labels: Tensor, dataset: Dataset) -> None:
    """Add the omitted classes' test figures, before and after the bias correction, to a run's
    report (`transfer.bias_correction`), on disk too."""
    kept = report.get("transfer", {}).get("omitted", {})
    if "validation_agreement" in kept or not is_rank_zero():
        return  # a run kept by --resume has them; rank zero writes them
    model, _ = load_model(out)
    report["transfer"]["omitted"] = bias_correction(
        predict_logits(model, test_images, dataset=dataset), test_labels,
        predict_logits(model, validation, dataset=dataset), teacher_validation,
        report["transfer"]["excluded_classes"])
    save_report(out, report)


def record_gain(student: RunReport, student_dir: Path, twin_dir: Path, twin: RunReport
                ) -> None:
    """Add the gain over the twin to the student's report, on disk too."""
    student["gain_over_twin"] = (student["evaluation"]["test"]["top1"]
                                 - twin["evaluation"]["test"]["top1"])
    student["twin"] = str(twin_dir)
    save_report(student_dir, student)


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,2,5' (or both, '0-2,7') as a list of seeds."""
    from distill.bounds import MAX_SEED

    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            seeds += range(int(first), int(last or first) + 1)
    except ValueError:
        raise DistillError(f"--seeds {text[:40]!r} is not a list of seeds: write e.g. 0-4 or "
                           "0,2,5.") from None
    if not seeds or len(seeds) > 100 or not all(0 <= s <= MAX_SEED for s in seeds):
        raise DistillError(f"--seeds {text[:40]!r}: give between 1 and 100 seeds, each from 0 to "
                           f"{MAX_SEED}.")
    return list(dict.fromkeys(seeds))
