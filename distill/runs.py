"""One training run from start to finish: the run folder, training, weights and the report."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import lightning as L
import timm
import torch

from distill.data import MNISTDataModule
from distill.errors import DistillError
from distill.export import save_weights
from distill.report import cost, evaluate, write_run_report
from distill.training import Classifier, Limits, TrainConfig, describe, fit, make_trainer

FINISHED_MARKER = "report.json"


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber a finished run unless asked to."""
    if (out / FINISHED_MARKER).exists() and not overwrite:
        raise DistillError(f"{out} already holds a finished run. Pass --overwrite to replace it, "
                           "or choose another folder with --out.")
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def environment() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": L.__version__, "timm": timm.__version__, "git_commit": commit or "unknown"}


def train_classifier(name: str, out: Path, config: TrainConfig, command: str,
                     data_dir: Path | str | None = None, limits: Limits | None = None,
                     accelerator: str = "auto", overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Train a network on hard labels, write its run folder, return its report."""
    limits = limits or Limits()
    prepare_run_dir(out, overwrite)
    L.seed_everything(config.seed, verbose=False)
    datamodule = MNISTDataModule(data_dir, config.batch_size, config.augment, config.seed,
                                 limits.train_size)
    module = Classifier(config.model, config.model_kwargs, config.lr, config.weight_decay,
                        config.warmup)
    trainer = make_trainer(out, config, limits, accelerator, progress)
    result = fit(module, datamodule, trainer)
    return finish_run(name, out, module.model, config, result, command, data_dir, limits)


def finish_run(name: str, out: Path, model: torch.nn.Module, config: TrainConfig, result,
               command: str, data_dir, limits: Limits, extra: dict | None = None) -> dict:
    weights = out / "weights.safetensors"
    save_weights(model, config.model, config.model_kwargs, weights)
    device = result.module.device
    report = {
        "name": name,
        "model": config.model,
        "command": command,
        "config": describe(config),
        "training": {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                     "seconds": result.train_seconds, "device": result.device,
                     "epoch_seconds": result.epoch_seconds, "images_per_epoch": result.train_images,
                     "seed": config.seed},
        "evaluation": evaluate(model, data_dir, limits.test_size, device),
        "cost": cost(model, weights),
        "environment": environment(),
        **(extra or {}),
    }
    write_run_report(out, report)
    return report
