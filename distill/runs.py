"""One training run from start to finish: the run folder, training, weights and the report."""

from __future__ import annotations

import csv
import functools
import platform
import subprocess
from pathlib import Path

import lightning as L
import timm
import torch
from torch import nn

from distill.data import EVAL_BATCH, DataModule, validation_split
from distill.datasets import Dataset, get_dataset
from distill.distillation import Distiller
from distill.distributed import Parallel, is_rank_zero, wait_for_rank_zero
from distill.errors import DistillError
from distill.export import save_weights
from distill.files import (
    RUN_LOCK,
    RUN_MARKER,
    check_run_folder,
    restore_aside,
    run_lock,
    set_aside,
)
from distill.metrics import (
    accuracy_figures,
    agreement,
    cost,
    evaluate,
    input_shape,
    predict_logits,
)
from distill.recipes import Distillation
from distill.report import load_report, public_report, write_run_report
from distill.run_report import InitValidation, RunReport, Validation
from distill.training import Classifier, Limits, TrainConfig, describe, fit, make_trainer

FINISHED_MARKER = "report.json"


LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def check_run_dir(out: Path, overwrite: bool, resume: bool = False, dataset: str | None = None,
                  image_size: int | None = None) -> None:
    """Refuse a folder distill did not make, and a finished or unfinished run unless asked to
    replace (--overwrite) or continue (--resume) it. `dataset` and `image_size`: the new run's,
    where known; a finished run of another dataset or size is said as such (a folder's runs go
    to runs/NAME whatever its path and size: ~/a/photos and ~/b/photos share runs/photos)."""
    check_run_folder(out, replacing=overwrite or resume)
    if overwrite:
        return
    finished = (out / FINISHED_MARKER).exists()
    # --resume keeps a finished run as it is: one of another dataset or size is not this one.
    if finished and (other := other_data(out, dataset, image_size)):
        there, apart = other
        raise DistillError(f"{out} already holds a finished run {there}. Pass --overwrite to "
                           "replace it, or keep both: another folder for these runs (--out for a "
                           "teacher, --runs for students)"
                           + (f", e.g. {out.parent}-{apart}." if apart else "."))
    if resume:
        return
    if finished:
        raise DistillError(f"{out} already holds a finished run. Pass --overwrite to replace it, "
                           "--resume to keep it (and run only what is missing), or choose "
                           "another folder.")
    if (out / "checkpoints").exists():
        raise DistillError(f"{out} holds an unfinished run. Pass --resume to continue it, or "
                           "--overwrite to start again.")


def other_data(out: Path, dataset: str | None, image_size: int | None) -> tuple[str, str] | None:
    """How the finished run in `out` differs from a new one of `dataset` at `image_size` ("of
    folder:/a/photos", "on 20x20 images"), and what would tell their folders apart ("" where
    nothing says); None where it does not differ, or cannot be read."""
    from distill.datasets import FOLDER_PREFIX, folder_root

    if (report := load_report(out)) is None:
        return None
    theirs = report.get("dataset", "mnist"), report.get("config", {}).get("image_size", 28)
    if dataset is not None and theirs[0] != dataset:
        # A folder's runs are told apart by its parent (~/b/photos: runs/photos-b).
        return f"of {theirs[0]}", (folder_root(dataset).parent.name
                                   if dataset.startswith(FOLDER_PREFIX) else "")
    if image_size is not None and theirs[1] != image_size:
        return f"on {theirs[1]}x{theirs[1]} images", str(image_size)
    return None


def prepare_run_dir(out: Path, overwrite: bool, resume: bool = False) -> Path | None:
    """Make the run folder ready (after `check_run_dir`, under `run_lock`); the checkpoint to
    resume from. A run being replaced is set aside, not deleted (see `files.set_aside`)."""
    if resume and not overwrite:
        if (out / LAST_CHECKPOINT).is_file():
            set_metrics_aside(out, out / LAST_CHECKPOINT)
            return out / LAST_CHECKPOINT
        if not (out / "logs").is_dir():
            raise DistillError(f"Nothing to resume in {out}: no {LAST_CHECKPOINT}. Run "
                               "without --resume to start.")
        overwrite = True  # interrupted in its first epoch: nothing to continue from, start again
    if overwrite and any(entry.name not in (RUN_MARKER, RUN_LOCK) for entry in out.iterdir()):
        set_aside(out)
    return None


def load_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint's contents; a clear error for a damaged (e.g. truncated) file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise DistillError(f"{path} is damaged and cannot be read ({type(error).__name__}). Run "
                           "again with --overwrite to start the run over.") from error


METRICS = Path("logs") / "metrics.csv"
METRICS_BEFORE_RESUME = Path("metrics-before-resume.csv")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    fields = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def set_metrics_aside(out: Path, checkpoint: Path) -> None:
    """Keep the logged metrics of the epochs `checkpoint` holds, for `merge_metrics_back`.

    Lightning's CSV logger deletes metrics.csv when it starts, and a resumed run logs only the
    epochs it trains: without this, its curves would begin where the interruption was.
    """
    state = load_checkpoint(checkpoint)
    epoch, step = state["epoch"], state["global_step"]

    def kept(row: dict[str, str]) -> bool:  # rows without an epoch are the learning rate's
        return int(row["epoch"]) <= epoch if row.get("epoch") else int(row["step"]) < step

    rows = read_rows(out / METRICS_BEFORE_RESUME) + read_rows(out / METRICS)
    write_rows(out / METRICS_BEFORE_RESUME, [row for row in rows if kept(row)])
    for stale in (out / "logs").glob("*"):  # the logger writes them again
        stale.unlink()


def merge_metrics_back(out: Path) -> None:
    """After a resumed run: metrics.csv with every epoch, the ones before the resume first."""
    before = out / METRICS_BEFORE_RESUME
    if before.is_file():
        write_rows(out / METRICS, read_rows(before) + read_rows(out / METRICS))
        before.unlink()


def code_version(folder: Path = Path(__file__).parent) -> str:
    """The commit of the code in `folder`, with "-dirty" when tracked files differ from it;
    "unknown" outside a git checkout (an installed wheel)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=folder,
                              timeout=5).stdout.strip()

    try:
        commit = git("rev-parse", "--short=7", "HEAD")
        changed = commit and git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if changed else commit or "unknown"


@functools.cache  # once a process: its code is what it imported, whatever is committed later
def environment() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": L.__version__, "timm": timm.__version__, "git_commit": code_version()}


def train_run(name: str, out: Path, config: TrainConfig, command: str,
              data_dir: Path | str | None = None, limits: Limits | None = None,
              accelerator: str = "auto", overwrite: bool = False, progress: bool = True,
              resume: bool = False, teacher: nn.Module | None = None,
              distillation: Distillation | None = None,
              teacher_logits: torch.Tensor | None = None,
              validation_logits: torch.Tensor | None = None,
              teacher_predictions: torch.Tensor | None = None, extra: dict | None = None,
              parallel: Parallel = Parallel()) -> RunReport:
    """Train one network, write its run folder, return its report.

    With `distillation`, the network learns from `teacher`; without it, from the labels alone.
    `teacher_logits` and `validation_logits` (from `cache`) replace the teacher's forward passes.
    `teacher_predictions` (the teacher's classes for the test images scored) make the report
    state how often the network agrees with the teacher. With several processes (`parallel`),
    each runs this; rank zero alone owns the folder (`distill.distributed`).
    """
    if config.views > 1 and distillation is not None:
        raise DistillError("Batch augmentation (views > 1) trains the teacher only: a student's "
                           "teacher logits exist for one view of each image.")
    limits = limits or Limits()
    if resume and (finished := load_report(out)) is not None:
        return finished
    started_with = environment()
    dataset = get_dataset(config.dataset, config.image_size)
    args = (name, out, config, command, data_dir, limits, accelerator, progress)
    inputs = (teacher, distillation, teacher_logits, validation_logits, teacher_predictions, extra,
              started_with, dataset, parallel)
    if not is_rank_zero():  # rank zero has checked, locked and prepared the folder
        last = out / LAST_CHECKPOINT
        return _train_and_report(*args, last if resume and last.is_file() else None, *inputs)
    check_run_dir(out, overwrite, resume, config.dataset, config.image_size)
    if config.init is not None:  # a wrong file fails before minutes of decoding a folder
        start_from(timm.create_model(config.model, **config.model_kwargs,
                                     **dataset.network_kwargs()), config)
    # Bad data fails here, before a run folder exists: both splits are read and checked.
    train_images = dataset.training_images(data_dir)
    dataset.load("test", data_dir)
    check_batch_size(config.batch_size, limits, train_images)
    with run_lock(out):
        # Again, under the lock: another process may have been first.
        check_run_dir(out, overwrite, resume, config.dataset, config.image_size)
        resume_from = prepare_run_dir(out, overwrite, resume)
        try:
            return _train_and_report(*args, resume_from, *inputs)
        except BaseException:
            restore_aside(out)  # a replaced run comes back if no epoch of the new one finished
            raise


def start_from(network: nn.Module, config: TrainConfig) -> None:
    """Load the weights `config.init` names (a run folder or weights file) into `network`: the
    same network, trained on a dataset of the same classes and shape."""
    from distill.export import load_model

    path = Path(config.init)
    trained, architecture = load_model(path)
    if architecture != config.model:
        raise DistillError(f"--init {path} holds a {architecture}, and this run trains a "
                           f"{config.model}: give the weights of a {config.model}.")
    try:
        network.load_state_dict(trained.state_dict())
    except RuntimeError:
        raise DistillError(f"--init {path}: its {architecture} differs in shape from this run's "
                           "(other classes, channels or network options): give the weights "
                           "of this recipe's network for this dataset's classes.") from None


def scored_against_start(kept: nn.Module, config: TrainConfig, data_dir: Path | str | None,
                         limits: Limits, device: torch.device, dataset: Dataset
                         ) -> InitValidation:
    """A warm restart's question: did the schedule run again improve on the weights it started
    from? Both on the run's validation images, by the figure its epoch was kept by (a teacher's
    validation cross-entropy; the starting weights are read again from `config.init`)."""
    from distill.export import load_model

    images, labels = validation_split(data_dir, dataset, config.exclude_classes)
    validated = None if limits.val_batches is None else limits.val_batches * EVAL_BATCH
    images, labels = images[:validated], labels[:validated]  # as many as the run validated on

    # Both by one function on the same images, so that they compare exactly (the kept epoch's
    # figures are in the run's log too, but the starting weights' are not).
    def scored(network: nn.Module) -> Validation:
        figures = accuracy_figures(predict_logits(network, images, device=device, dataset=dataset),
                                   labels)
        return {"loss": figures["loss"], "top1": figures["top1"]}

    return {"validation_images": len(labels), "start": scored(load_model(Path(config.init))[0]),
            "kept": scored(kept)}


def check_batch_size(batch_size: int, limits: Limits, train_size: int = 55_000,
                     lower: str = "lower --batch-size (128 is the default)") -> None:
    """lower: how the command lowers it (`distill student` takes its recipe's)."""
    images = min(train_size, limits.train_size or train_size)
    if batch_size > images:
        raise DistillError(f"The batch size {batch_size} is larger than the {images:,} training "
                           f"images: {lower}.")


def _train_and_report(name: str, out: Path, config: TrainConfig, command: str,
                      data_dir: Path | str | None, limits: Limits, accelerator: str,
                      progress: bool, resume_from: Path | None, teacher: nn.Module | None,
                      distillation: Distillation | None, teacher_logits: torch.Tensor | None,
                      validation_logits: torch.Tensor | None,
                      teacher_predictions: torch.Tensor | None, extra: dict | None,
                      started_with: dict, dataset: Dataset, parallel: Parallel) -> RunReport:
    L.seed_everything(config.seed, verbose=False)
    datamodule = DataModule.for_run(config, data_dir, limits.train_size, dataset,
                                    distilled=distillation is not None)
    model_kwargs = {**config.model_kwargs, **dataset.network_kwargs()}
    args = dict(model_kwargs=model_kwargs, lr=config.lr, weight_decay=config.weight_decay,
                warmup=config.warmup, optimizer=config.optimizer, compile=config.compile)
    if config.labeled_fraction < 1:
        args["labeled_fraction"] = config.labeled_fraction
    if distillation is not None:
        module = Distiller(teacher, config.model, distillation.build(config.seed), teacher_logits,
                           validation_logits, input_shape(dataset), **args)
    else:
        module = Classifier(config.model, **args)
    if config.init is not None and resume_from is None:  # a resumed run has its checkpoint's
        start_from(module.model, config)
    trainer = make_trainer(out, config, limits, accelerator, progress, parallel)
    result = fit(module, datamodule, trainer, resume_from)
    if not is_rank_zero():  # rank zero scores the network and writes the report
        wait_for_rank_zero()
        return load_report(out)
    merge_metrics_back(out)
    model = module.model.eval()
    weights = out / "weights.safetensors"
    save_weights(model, config.model, model_kwargs, weights, dataset)
    evaluation = evaluate(model, data_dir, limits.test_size, module.device, dataset)
    if config.init is not None and distillation is None:
        extra = {**(extra or {}), "init_validation": scored_against_start(
            model, config, data_dir, limits, module.device, dataset)}
    if teacher_predictions is not None:
        evaluation["teacher_agreement"] = agreement(evaluation["_logits"], teacher_predictions)
    kind = "student" if distillation else "twin" if teacher_predictions is not None else "teacher"
    report: RunReport = {
        "name": name,
        "run_dir": str(out),
        "model": config.model,
        "kind": kind,
        "command": command,
        "dataset": dataset.name,
        "classes": list(dataset.classes),
        "config": describe(config),
        "distillation": distillation.describe() if distillation else None,
        "training": {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                     "seconds": result.train_seconds, "device": result.device,
                     "epoch_seconds": result.epoch_seconds, "images_per_epoch": result.train_images,
                     "seed": config.seed},
        "evaluation": evaluation,
        **transfer_set(config, datamodule),
        "cost": cost(model, weights, dataset),
        "environment": started_with,
        **(extra or {}),
    }
    write_run_report(out, report)
    wait_for_rank_zero()
    return public_report(report)


def transfer_set(config: TrainConfig, datamodule: DataModule) -> dict:
    """What a report says of the transfer set: the labels used and the classes left out."""
    return {"transfer": {"labeled_fraction": config.labeled_fraction,
                         "labeled_images": datamodule.labeled_images,
                         "excluded_classes": list(config.exclude_classes)}}
