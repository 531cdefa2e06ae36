"""The teacher's logits for every augmented training view, computed once and shared.

An image's augmentation depends only on (seed, epoch, index) and the batches only on (seed,
epoch, batch size), so every student distilled from the same teacher with the same data settings
sees the same teacher outputs. Computing them in one pass, replaying exactly the training batches,
gives logits bit-identical to running the teacher on each batch, and a sweep over many recipes
pays for the teacher once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.augment import recorded
from distill.data import UNIFORMS_ROWS, DataModule
from distill.datasets import Dataset, get_dataset
from distill.distributed import wait_for_rank_zero
from distill.errors import DistillError
from distill.files import atomic_path
from distill.methods import Method
from distill.metrics import predict_logits
from distill.training import Limits, TrainConfig

# Part of every key: raise it when a code change alters the teacher's numerics (2: channels-last
# convolutions), so that no cache computed before serves a run after.
CACHE_FORMAT = 2


def weights_digest(teacher: nn.Module):  # a hashlib sha256 object, to extend with settings
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest


def cache_key(teacher: nn.Module, config: TrainConfig, limits: Limits,
              method: Method | None = None) -> str:
    digest = weights_digest(teacher)
    # Keys from before flips, erasing and CutMix existed stay as they were.
    augment = recorded(config.augment) if config.augment else None
    settings = {"format": CACHE_FORMAT, "augment": augment,
                "seed": config.seed, "batch_size": config.batch_size,
                "train_size": limits.train_size, "train_batches": limits.train_batches}
    if config.dataset != "mnist":  # MNIST's keys stay as they were before datasets were named
        settings["dataset"] = [config.dataset, config.image_size]
        # A folder's files may change between two students: the rows would be other images.
        if fingerprint := getattr(get_dataset(config.dataset, config.image_size), "fingerprint",
                                  ""):
            settings["dataset"].append(fingerprint)
    if config.exclude_classes:  # other batches (a labeled fraction changes no batch)
        settings["exclude_classes"] = sorted(config.exclude_classes)
    if method is not None and method.view_key() is not None:  # kd's keys stay as they were
        settings["view"] = {"method": method.name, **method.view_key()}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def compute_epochs(teacher: nn.Module, datamodule: DataModule, epochs: list[int],
                   batches_per_epoch: int | None, device: torch.device, progress: bool,
                   done: Callable[[int, Tensor], None], method: Method | None = None) -> None:
    """Hand each epoch's (60000, classes) logits to `done` as soon as it is computed; rows of
    images not in the training slice stay zero."""
    teacher = teacher.eval().to(device)
    loader = datamodule.train_dataloader()
    steps = min(len(loader), batches_per_epoch or len(loader))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("Teacher logits", total=len(epochs) * steps)
        for epoch in epochs:
            loader.sampler.set_epoch(epoch)
            table = None
            for step, batch in enumerate(loader):
                if step == steps:
                    break
                batch = tuple(t.to(device) if isinstance(t, Tensor) else t for t in batch)
                x, _, positions, _ = datamodule.model_input(batch, training=True)
                if method is not None:  # the view the student will see (e.g. mixed up)
                    x = method.view(x, positions, epoch)
                logits = teacher(x).float()
                if table is None:
                    table = torch.zeros(max(UNIFORMS_ROWS, datamodule.rows), logits.shape[-1])
                table[positions.cpu()] = logits.cpu()
                bar.advance(task)
            done(epoch, table)


def epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.safetensors"


def read_epoch(path: Path) -> Tensor | None:
    try:
        return load_file(str(path))["logits"]
    except Exception:  # noqa: BLE001 - a missing or damaged epoch is computed again, not fatal
        return None


class EpochTables:
    """The teacher's logits epoch by epoch, as `teacher_logits_table` gives them, for a run that
    may stop early: the epochs it can reach before it may stop are computed first, the others
    `CHUNK` at a time when training first reaches them. A long schedule stopped at its 30th
    epoch of 300 pays for about 30 epochs of teacher passes, not 300."""

    CHUNK = 10

    def __init__(self, tables: dict[int, Tensor | None],
                 compute: Callable[..., None], teacher: nn.Module) -> None:
        self.tables, self.compute, self.teacher = tables, compute, teacher
        self.computed: list[tuple[list[int], float]] = []  # not yet told: (epochs, seconds)

    def computed_note(self) -> str | None:
        """What was computed since the last call, for the epoch's line: without it, an epoch
        that took the teacher's logits for ten more is minutes long for no reason given."""
        if not self.computed:
            return None
        epochs = sorted(e for chunk, _ in self.computed for e in chunk)
        seconds = sum(s for _, s in self.computed)
        self.computed = []
        return f"{seconds:.0f} s of them the teacher's logits for {epoch_span(epochs)}"

    def __len__(self) -> int:
        return len(self.tables)

    def __getitem__(self, epoch: int) -> Tensor:
        if self.tables[epoch] is None:
            wanted = [e for e in range(epoch, min(epoch + self.CHUNK, len(self)))
                      if self.tables[e] is None]
            # Between two training steps: the student's random state is left as it was (the
            # same weights as a run whose logits were all computed first), and no progress bar
            # of its own under the run's.
            home = next(self.teacher.parameters()).device
            started = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                self.compute(wanted, during_training=True)
            self.computed.append((wanted, time.perf_counter() - started))
            self.teacher.to(home)  # computed on the cache's device; training has it here
        return self.tables[epoch]


def teacher_logits_table(teacher: nn.Module, config: TrainConfig, limits: Limits, cache_dir: Path,
                         data_dir: Path | str | None = None, device: str | torch.device = "cpu",
                         progress: bool = True, method: Method | None = None,
                         ahead: int | None = None) -> Tensor | EpochTables:
    """(epochs, 60000, classes) logits for these settings: read from `cache_dir`, or computed and
    stored there.

    Each epoch is a file of its own, written as soon as it is computed: an interrupted pass keeps
    the epochs it finished, and a longer recipe computes only the epochs it lacks.
    ahead: compute only the first `ahead` epochs now, and give `EpochTables` that compute the
    others when asked for (one process; several compute every epoch first, sharing them).
    """
    # Without augmentation every epoch shows the teacher the same images: one pass over the whole
    # training slice (whatever the batch limit) serves every epoch.
    augmented = (config.augment is not None and not config.augment.is_identity) or (
        method is not None and method.view_key() is not None)
    epochs = config.epochs if augmented else 1
    folder = cache_dir / f"teacher-logits-{cache_key(teacher, config, limits, method)}"
    tables = {epoch: read_epoch(epoch_file(folder, epoch)) for epoch in range(epochs)}
    missing = [epoch for epoch, table in tables.items() if table is None]
    rank, world_size = process_share()
    if world_size > 1:
        # Each process computes whole epochs (the same batches as one process, so the same
        # logits bit for bit) and writes them; then all read every epoch. What is missing is
        # rank zero's view: another process could read after rank zero's first epoch is written.
        import torch.distributed as dist

        shared = [missing]
        dist.broadcast_object_list(shared, src=0)
        share = shared[0][rank::world_size]
        if share:
            compute_missing(teacher, config, limits, folder, data_dir, device,
                            progress and rank == 0, method, share, epochs, augmented, tables)
        wait_for_rank_zero()
        tables = {epoch: read_epoch(epoch_file(folder, epoch)) for epoch in range(epochs)}
        missing = [epoch for epoch, table in tables.items() if table is None]

    def compute(which: list[int], during_training: bool = False) -> None:
        compute_missing(teacher, config, limits, folder, data_dir, device,
                        progress and not during_training, method, which, epochs, augmented,
                        tables, during_training)

    if ahead is not None and augmented and world_size == 1 and ahead < epochs:
        if now := [epoch for epoch in missing if epoch < ahead]:
            compute(now)
        if later := [epoch for epoch in missing if epoch >= ahead]:
            # One line for them all: during training they come CHUNK epochs at a time.
            print(f"Teacher logits for {epoch_span(later)} of {epochs}: computed when training "
                  f"reaches them (a run that stops early skips them), kept in {folder}", flush=True)
        return EpochTables(tables, compute, teacher)
    if missing:
        compute(missing)
    stacked = torch.stack([tables[epoch] for epoch in range(epochs)])
    return stacked if augmented else stacked.expand(config.epochs, -1, -1)


def compute_missing(teacher: nn.Module, config: TrainConfig, limits: Limits, folder: Path,
                    data_dir: Path | str | None, device: str | torch.device, progress: bool,
                    method: Method | None, missing: list[int], epochs: int, augmented: bool,
                    tables: dict[int, Tensor | None], during_training: bool = False) -> None:
    """Compute these epochs' tables, each written to `folder` as soon as it is done (during
    training, a Ctrl-C is the run's to handle: it keeps its epochs for --resume)."""
    if not during_training:  # the epochs computed during training were announced before it
        print(f"Teacher logits for {epoch_span(missing)} of {epochs}: computed once, kept in "
              f"{folder}", flush=True)
    datamodule = DataModule.for_run(config, data_dir, limits.train_size,
                                    get_dataset(config.dataset, config.image_size),
                                    distilled=True)
    datamodule.setup("fit")

    def done(epoch: int, table: Tensor) -> None:
        save_atomic(epoch_file(folder, epoch), {"logits": table})
        tables[epoch] = table

    try:
        compute_epochs(teacher, datamodule, missing, limits.train_batches if augmented else None,
                       torch.device(device), progress, done, method)
    except KeyboardInterrupt as stop:
        if during_training:
            raise
        finished = sum(epoch_file(folder, epoch).is_file() for epoch in range(epochs))
        raise DistillError(f"Interrupted while computing the teacher's logits: {finished} of "
                           f"{epochs} epochs are kept in {folder}. Run the same command again "
                           "to go on from there.") from stop


def epoch_span(epochs: list[int]) -> str:
    """'epoch 3', 'epochs 11-143' or '12 epochs' (counted from 1) for these epoch indices."""
    if len(epochs) == 1:
        return f"epoch {epochs[0] + 1}"
    if epochs[-1] - epochs[0] + 1 == len(epochs):
        return f"epochs {epochs[0] + 1}-{epochs[-1] + 1}"
    return f"{len(epochs)} epochs"


def process_share() -> tuple[int, int]:
    """(rank, processes) of a multi-process run whose processes all run; (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def teacher_clean_logits(teacher: nn.Module, images: Tensor, cache_dir: Path,
                         dataset: Dataset | None = None) -> Tensor:
    """The teacher's logits on these unaugmented images (validation or test), computed once."""
    key = weights_digest(teacher)
    key.update(f"{CACHE_FORMAT}".encode() + images.numpy().tobytes())
    if dataset is not None and dataset.name != "mnist":  # its normalisation
        key.update(json.dumps([dataset.name, dataset.mean, dataset.std]).encode())
    path = cache_dir / f"teacher-clean-{key.hexdigest()[:16]}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["logits"]
        except Exception:  # noqa: BLE001, S110 - a damaged cache is recomputed below, not fatal
            pass
    logits = predict_logits(teacher, images, dataset=dataset)
    save_atomic(path, {"logits": logits})
    return logits


def save_atomic(path: Path, tensors: dict[str, Tensor]) -> None:
    """A safetensors file that is either whole or absent, even if the run is interrupted."""
    with atomic_path(path) as tmp:  # a temporary file of its own: two students may both write
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(tmp))
