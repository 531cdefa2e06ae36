"""Plain classification with Lightning: the teacher, and students trained on hard labels alone."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from timm.optim import create_optimizer_v2
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

import distill.nets  # noqa: F401 - registers the networks with timm
from distill.augment import ADDED_AUGMENT
from distill.data import NUM_CLASSES, Augment, DataModule
from distill.distributed import Parallel
from distill.errors import DistillError
from distill.files import drop_aside
from distill.transfer import UNLABELED, labeled_cross_entropy


@dataclass
class TrainConfig:
    """How one network is trained: its architecture, optimizer, schedule and data."""

    model: str = "digitnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"  # a name in distill.datasets.DATASETS, or folder:PATH
    image_size: int = 28  # a folder's images are decoded at this size
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 4e-3
    weight_decay: float = 0.05
    warmup: float = 0.1  # fraction of the steps spent rising to `lr`, the rest decays (cosine)
    patience: int = 3  # epochs without a better validation loss before stopping early
    augment: Augment | None = field(default_factory=Augment)
    views: int = 1  # augmented copies of each image in a batch (batch augmentation)
    seed: int = 0
    compile: bool = False  # torch.compile the network (pays off on GPUs, for long runs)
    init: str | None = None  # weights the network starts from (a warm restart), else random
    ema_decay: float | None = None  # validate, select and keep an exponential moving average
    # The transfer set (`distill.transfer`): the share of images whose labels may be used, and
    # classes left out of training altogether.
    labeled_fraction: float = 1.0
    exclude_classes: list[int] = field(default_factory=list)


@dataclass
class Limits:
    """Caps for quick trials and tests; None means no cap."""

    train_size: int | None = None  # training images
    train_batches: int | None = None  # batches per epoch
    val_batches: int | None = None  # validation batches (of data.EVAL_BATCH images) per epoch
    test_size: int | None = None  # test images scored at the end


FINITE_CHECK_EVERY = 50


class Classifier(L.LightningModule):
    """A timm network trained with cross-entropy (no label smoothing: it erases the similarity
    between classes that a teacher passes on to its students)."""

    objective = "loss"  # what the epoch line calls train_loss and val_loss

    def __init__(self, model: str = "digitnet", model_kwargs: dict | None = None, lr: float = 4e-3,
                 weight_decay: float = 0.05, warmup: float = 0.1, optimizer: str = "adamw",
                 compile: bool = False, labeled_fraction: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["teacher", "teacher_logits", "validation_logits",
                                          "method"])
        kwargs = {"num_classes": NUM_CLASSES, **(model_kwargs or {})}  # the dataset's classes
        self.model = timm.create_model(model, **kwargs)
        # The compiled wrapper is kept out of the module tree, so checkpoints and weights files
        # hold the plain network's parameter names.
        object.__setattr__(self, "_forward_model", torch.compile(self.model) if compile else
                           self.model)
        # Below 1, some images are UNLABELED (`distill.transfer`): left out of the cross-entropy
        # and the accuracies; at 0 there is no accuracy to log at all.
        partial = labeled_fraction < 1
        self.cross_entropy = labeled_cross_entropy if partial else F.cross_entropy
        self.has_labels = labeled_fraction > 0
        ignore = {"ignore_index": UNLABELED} if partial else {}
        self.train_acc = MulticlassAccuracy(kwargs["num_classes"], average="micro", **ignore)
        self.val_acc = MulticlassAccuracy(kwargs["num_classes"], average="micro", **ignore)
        # The epoch's training losses, each summed over images on the device (see training_step).
        self.epoch_sums: dict[str, Tensor] = {}
        self.epoch_images = 0

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_model(x)

    def losses(self, batch: tuple, batch_idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The logits of a training batch and the loss terms, summed into the loss."""
        x, y = batch[:2]
        logits = self(x)
        return logits, {"ce": self.cross_entropy(logits, y)}

    def validation_losses(self, x: Tensor, labels: Tensor, batch_idx: int
                          ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self(x)
        return logits, {"ce": self.cross_entropy(logits, labels)}

    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        y = batch[1]
        logits, terms = self.losses(batch, batch_idx)
        loss = sum(terms.values())
        # Reading the loss forces a device sync, so it is checked every few steps only; a NaN
        # stays in the weights once there, so it is still caught, a few steps late at most.
        if self.global_step % FINITE_CHECK_EVERY == 0 and not torch.isfinite(loss):
            raise DistillError(f"The training loss is {loss.item()} at step {self.global_step}: "
                               "training diverged. Lower the learning rate (--lr) and run again.")
        # Lightning's self.log costs about a millisecond of host time a call (it moves its
        # metric to the loss's device each time): on an H200, where a small student's steps wait
        # on the host, a third of the step. So the epoch's losses are summed here, on the device,
        # and logged once, at the epoch's last batch: the same means over images. (A plain sum,
        # not a torchmetrics MeanMetric per term: the terms are named by the method at the first
        # step, and MeanMetric's default NaN check reads the value, a device sync every step.)
        logged = {"train_loss": loss, **({f"loss/{name}": term for name, term in terms.items()}
                                          if len(terms) > 1 else {})}
        for name, value in logged.items():
            self.epoch_sums[name] = self.epoch_sums.get(name, 0) + value.detach().float() * len(y)
        self.epoch_images += len(y)
        if self.has_labels:  # against an image's larger share where CutMix mixed two
            self.train_acc.update(logits, y.argmax(1) if y.is_floating_point() else y)
        if self.trainer.is_last_batch:
            self.log_training_epoch()
        return loss

    def log_training_epoch(self) -> None:
        for name, total in self.epoch_sums.items():
            self.log(name, total / self.epoch_images, on_step=False, on_epoch=True,
                     prog_bar=name == "train_loss", batch_size=1, sync_dist=True)
        if self.has_labels:
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        self.epoch_sums, self.epoch_images = {}, 0

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        x, y = batch[:2]
        logits, terms = self.validation_losses(x, y, batch_idx)
        self.log("val_loss", sum(terms.values()), prog_bar=True, batch_size=len(y),
                 sync_dist=True)
        if self.has_labels:
            self.val_acc(logits, y)
            self.log("val_acc", self.val_acc, prog_bar=True, batch_size=len(y))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning restores the loops, optimizer and schedule but not the random generators;
        # with them (stochastic depth, dropout) a resumed run ends exactly like an uninterrupted one.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self) -> dict:
        # timm's factory leaves norms and biases out of weight decay. A distillation method's
        # own trainable parts (an adapter) are optimized with the network.
        method = getattr(self, "method", None)
        trained = (self.model if method is None or not any(True for _ in method.parameters())
                   else nn.ModuleDict({"model": self.model, "method": method}))
        optimizer = create_optimizer_v2(trained, self.hparams.optimizer, lr=self.hparams.lr,
                                        weight_decay=self.hparams.weight_decay)
        schedule = warmup_cosine(optimizer, self.hparams.lr, self.trainer.estimated_stepping_batches,
                                 self.hparams.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_cosine(optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                  warmup: float) -> torch.optim.lr_scheduler.OneCycleLR:
    """`warmup` of the steps rising to `lr`, the rest decaying along a cosine."""
    # OneCycleLR divides by zero when the warm-up is exactly one step (10 steps at 10%): then
    # half a step, which it treats as none.
    if abs(warmup * total_steps - 1) < 1e-9:
        warmup = 0.5 / total_steps
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                               pct_start=warmup, anneal_strategy="cos",
                                               cycle_momentum=False)


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 as the epoch lines and reports do (its own
    says "Epoch 0/0" for a one-epoch run), and naming the run: `distill student` trains two."""

    def __init__(self, run_name: str = "") -> None:
        super().__init__()
        self.run_name = run_name

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"
        text = f"{self.run_name}: {text}" if self.run_name else text
        return f"{text:{len(self.validation_description)}}"


class EpochTimes(Callback):
    """Wall time of each training epoch, its validation included. Given a run name, it also
    prints one line per epoch, for runs without progress bars (logs, batch jobs): without it
    Lightning prints nothing between the start of training and its end."""

    def __init__(self, summary_for: str | None = None) -> None:
        self.seconds: list[float] = []
        self.seconds_before_resume = 0.0
        self.summary_for = summary_for

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Timed here rather than at the epoch's end so that the time is in the epoch's checkpoint
        # (written next, Lightning runs checkpoint callbacks last): a resumed run reports all
        # its epochs.
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - self._started)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.summary_for is not None and trainer.is_global_zero:
            print(self.summary(trainer), flush=True)

    def summary(self, trainer: L.Trainer) -> str:
        metrics = trainer.callback_metrics
        parts = [f"{self.summary_for}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        objective = getattr(trainer.lightning_module, "objective", "loss")
        for name, label, percent in (("train_loss", f"train {objective}", False),
                                     ("val_loss", f"val {objective}", False),
                                     ("val_acc", "val top-1", True)):
            if name in metrics:
                value = float(metrics[name])
                parts.append(f"{label} {100 * value:.2f}%" if percent else f"{label} {value:.4f}")
        note = getattr(trainer.lightning_module, "epoch_note", lambda: None)()
        line = ", ".join([*parts, f"{self.seconds[-1]:.0f} s", *([note] if note else [])])
        # A median of the last epochs: one that computed teacher logits or waited on another run
        # would throw a mean off. Early stopping may end the run sooner; seconds are not worth it.
        recent = sorted(self.seconds[-5:])
        left = (trainer.max_epochs - trainer.current_epoch - 1) * recent[len(recent) // 2]
        if left >= 60:
            line += f" (about {duration(left)} to epoch {trainer.max_epochs})"
        return line

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds = list(state_dict["seconds"])
        self.seconds_before_resume = sum(self.seconds)


def duration(seconds: float) -> str:
    """'40 s', '12 min', '2 h 05 min': as precise as an estimate of what is left deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class StopOnSigterm(Callback):
    """SIGTERM (`kill`, a cluster's scheduler) stops training at the end of a batch, every process
    at the same one, keeping the last finished epoch for --resume.

    It replaces Lightning's handler, which (2.6) broadcasts from inside the signal handler: a
    collective at an arbitrary point between DDP's own, so that two processes could wait on
    different collectives forever. This one only sets a flag; the processes agree on it at each
    batch's end, as EarlyStopping agrees on stopping."""

    def __init__(self) -> None:
        self.asked = False

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Lightning put its handler in place just before; it restores the one before it at the end.
        self.asked = False
        signal.signal(signal.SIGTERM, self._ask)

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.strategy.reduce_boolean_decision(self.asked, all=False):
            raise SIGTERMException


class RunCheckpoint(ModelCheckpoint):
    """A checkpoint callback that follows its run folder when the folder moves (renamed, or copied
    from the machine that started it) before --resume. Lightning keeps its best score and best
    models only when the checkpoints' folder has the same path as when they were saved: otherwise
    the epoch after the resume becomes the best one, whatever its validation loss."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_in = state_dict.get("dirpath")
        if saved_in and self.dirpath and saved_in != self.dirpath:

            def here(path: str) -> str:
                moved = path and os.path.dirname(path) == saved_in
                return os.path.join(self.dirpath, os.path.basename(path)) if moved else path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          "best_k_models": {here(path): score for path, score
                                            in state_dict.get("best_k_models", {}).items()}}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = here(state_dict[key])
        super().load_state_dict(state_dict)


class DropReplacedRun(Callback):
    """Deletes the run that --overwrite set aside once the new run's first epoch has finished:
    until then, a failure puts the old run back (`files.restore_aside`)."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            drop_aside(Path(trainer.default_root_dir))


def make_trainer(out: Path, config: TrainConfig, limits: Limits, accelerator: str = "auto",
                 progress: bool = True, parallel: Parallel = Parallel()) -> L.Trainer:
    """A Trainer that checkpoints the best epoch by validation loss and stops early."""
    check_accelerator(accelerator)
    cuda = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    callbacks = [
        RunCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_loss", mode="min"),
        # Since Lightning 2.6, save_last=True writes last.ckpt only when the best one improves:
        # an interrupted run would resume from its best epoch and redo every epoch after it.
        RunCheckpoint(dirpath=out / "checkpoints", filename="last", enable_version_counter=False),
        EarlyStopping(monitor="val_loss", mode="min", patience=config.patience),
        LearningRateMonitor(logging_interval="epoch"),
        EpochTimes(summary_for=None if progress else out.name),
        StopOnSigterm(),
        DropReplacedRun(),
    ]
    if config.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=config.ema_decay))
    if progress:
        callbacks.append(EpochProgressBar(out.name))
    return L.Trainer(
        default_root_dir=out, accelerator=accelerator, **parallel.trainer_args(),
        # Early stopping waits for the warm-up's end: while the rate still rises, a validation
        # loss that has not improved for `patience` epochs says nothing of the schedule (a long
        # schedule on a small folder stopped at its 16th epoch of 30 warming up).
        max_epochs=config.epochs, min_epochs=math.ceil(config.warmup * config.epochs),
        precision="bf16-mixed" if cuda else "32-true", callbacks=callbacks,
        logger=CSVLogger(out, name="logs", version=""), enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=min(50, limits.train_batches or 50),
        num_sanity_val_steps=0,
        limit_train_batches=limits.train_batches, limit_val_batches=limits.val_batches,
        deterministic="warn",
    )


def check_accelerator(accelerator: str) -> None:
    available = {"cpu": True, "auto": True, "cuda": torch.cuda.is_available(),
                 "gpu": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if accelerator not in available:
        raise DistillError(f"Unknown accelerator {accelerator!r}: use auto, cpu, cuda or mps.")
    if not available[accelerator]:
        raise DistillError(f"--accelerator {accelerator} was asked for but this machine has none. "
                           "Use --accelerator auto (or cpu).")


@dataclass
class FitResult:
    module: L.LightningModule
    best_checkpoint: Path
    epochs_run: int
    best_epoch: int
    train_seconds: float
    epoch_seconds: list[float]
    train_images: int
    device: str


def fit(module: L.LightningModule, datamodule: DataModule, trainer: L.Trainer,
        resume_from: Path | None = None) -> FitResult:
    """Train (or continue from a checkpoint), then load the best epoch's weights into `module`."""
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    except (SystemExit, KeyboardInterrupt, SIGTERMException) as stop:
        # Lightning turns Ctrl-C into SystemExit(1) after a graceful shutdown.
        if isinstance(stop, SystemExit) and not trainer.interrupted:
            raise
        checkpoints = Path(trainer.default_root_dir) / "checkpoints"
        kept = (f"continue from the last finished epoch (kept in {checkpoints})"
                if (checkpoints / "last.ckpt").is_file() else
                "start it again (no epoch had finished)")
        raise DistillError(f"Training was interrupted in epoch {trainer.current_epoch + 1}. Run "
                           f"the same command with --resume to {kept}.") from stop
    epoch_times = next(c for c in trainer.callbacks if isinstance(c, EpochTimes))
    seconds = time.perf_counter() - started + epoch_times.seconds_before_resume
    best = Path(trainer.checkpoint_callback.best_model_path)
    state = torch.load(best, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    best_epoch = int(state["epoch"])
    images = min(trainer.num_training_batches, len(trainer.train_dataloader)) * datamodule.batch_size
    return FitResult(module, best, len(epoch_times.seconds), best_epoch, seconds,
                     epoch_times.seconds, images,
                     device_name(trainer.strategy.root_device, trainer.world_size))


def device_name(device: torch.device, processes: int = 1) -> str:
    """'cpu (2 threads)', 'cuda (NVIDIA H100)'; under DDP, '4 processes, each on cuda (...)'."""
    if device.type == "cuda":
        name = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        threads = torch.get_num_threads()
        name = f"cpu ({threads} thread{'s' * (threads != 1)})"
    else:
        name = device.type
    return name if processes == 1 else f"{processes} processes, each on {name}"


def describe(config: TrainConfig) -> dict:
    """The config as plain JSON-ready data."""
    return json.loads(json.dumps(asdict(config)))


# Settings added to TrainConfig after runs were recorded, with the value those runs had.
ADDED_SETTINGS = {"dataset": "mnist", "image_size": 28, "labeled_fraction": 1.0,
                  "exclude_classes": [], "init": None}


def normalized(config: dict) -> dict:
    """A recorded config with the settings added since, so that old and new runs compare."""
    config = {**ADDED_SETTINGS, **config}
    if isinstance(config.get("augment"), dict):
        config["augment"] = {**ADDED_AUGMENT, **config["augment"]}
    return config
