"""The data path: a dataset's splits as uint8 tensors, batches gathered by index and augmented as
whole batches on the training device, and the DataModule.

The whole split is one uint8 tensor (47 MB for MNIST's 60k training images). Batches are gathered
by index and augmented as whole batches with `affine_grid`/`grid_sample`, so the hot path holds
no per-image Python. The random parameters of an image's augmentation depend only on
(seed, epoch, index): the same view comes out whatever the batch it lands in. The datasets
themselves (files, checks, classes, normalisation) are in `distill.datasets`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from distill.augment import (  # noqa: F401 - the data path's names, in one place
    HEAVY_AUGMENT_SEED,
    UNIFORMS_ROWS,
    Augment,
    augment,
    augmentation_uniforms,
    cutmix,
)
from distill.datasets import Dataset, get_dataset
from distill.datasets.idx import SPLITS, read_idx  # noqa: F401
from distill.errors import DistillError
from distill.transfer import UNLABELED, kept_classes, labeled_mask

# MNIST's shape: the default dataset's, for the code that needs no other (the digit demo).
NUM_CLASSES = 10
IMAGE_SIZE = 28
# Validation and test images go through a network in batches of this size. The teacher's cached
# validation logits are computed in the same batches, so they equal those of the online path.
# On a CPU, batches of 1000 take the teacher over twice as long per image as batches of 128, whose
# activations stay in the cache (benchmarks/eval_batch.py). Not measured on a GPU, where larger
# batches may pay: an H200's training steps waited on the host (benchmarks/README.md).
EVAL_BATCH = 128


def load_split(split: str, data_dir: Path | str | None = None, download: bool = True,
               dataset: Dataset | str = "mnist") -> tuple[Tensor, Tensor]:
    """Images (N, H, W) or (N, C, H, W) uint8 and labels (N,) int64 of 'train' or 'test'.

    Downloads the files that are missing where the dataset can, unless `download` is False.
    """
    dataset = get_dataset(dataset) if isinstance(dataset, str) else dataset
    return dataset.load(split, data_dir, download)


def validation_split(data_dir: Path | str | None = None, dataset: Dataset | str = "mnist",
                     exclude_classes: list[int] | tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
    """The validation slice of the training images and its labels, in the order validation sees
    them; without the excluded classes' images, as a run of that transfer set validates."""
    dataset = get_dataset(dataset) if isinstance(dataset, str) else dataset
    images, labels = dataset.load("train", data_dir)
    indices = dataset.split_indices(len(images))[1]
    indices = indices[kept_classes(labels[indices], exclude_classes)]
    return images[indices], labels[indices]


def scored_split(split: str, data_dir: Path | str | None = None, dataset: Dataset | str = "mnist"
                 ) -> tuple[Tensor, Tensor]:
    """The images a network is scored on, and their labels: the 'test' split, the 'validation'
    images every run keeps its epoch by, or 'all' the dataset's images (a folder the network was
    not trained on)."""
    dataset = get_dataset(dataset) if isinstance(dataset, str) else dataset
    if split == "test":
        return dataset.load("test", data_dir)
    if split == "validation":
        return validation_split(data_dir, dataset)
    (train, train_labels), (test, test_labels) = (dataset.load(s, data_dir) for s in ("train", "test"))
    return torch.cat([train, test]), torch.cat([train_labels, test_labels])


def validation_images(data_dir: Path | str | None = None, dataset: Dataset | str = "mnist",
                      exclude_classes: list[int] | tuple[int, ...] = ()) -> Tensor:
    return validation_split(data_dir, dataset, exclude_classes)[0]


def to_unit(images: Tensor) -> Tensor:
    """uint8 (B, H, W) or (B, C, H, W) to float (B, C, H, W) in [0, 1]."""
    return (images.unsqueeze(1) if images.dim() == 3 else images).float().div_(255)


def normalize(images: Tensor, dataset: Dataset | None = None) -> Tensor:
    """Each channel less the dataset's mean, over its standard deviation (MNIST's by default)."""
    dataset = dataset or get_dataset("mnist")
    if dataset.channels == 1:  # one channel: plain numbers, as MNIST's runs always computed it
        return (images - dataset.mean[0]) / dataset.std[0]
    mean = torch.tensor(dataset.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def prepare(images: Tensor, indices: Tensor | None = None, spec: Augment | None = None,
            seed: int = 0, epoch: int = 0, dataset: Dataset | None = None) -> Tensor:
    """uint8 images to the model's input, augmented where a spec and the images' indices are given.

    `indices` are the images' positions in their split: they pick each image's random parameters.
    """
    x = to_unit(images)
    if spec is not None and not spec.is_identity:
        uniforms = augmentation_uniforms(seed, epoch, images.device, rows=int(indices.max()) + 1)
        x = augment(x, uniforms[indices], spec)
    return normalize(x, dataset)


class IndexBatches(Sampler[tuple[int, Tensor]]):
    """Yields (epoch, index batch): a permutation drawn from (seed, epoch), or the order as is.

    Lightning calls `set_epoch` before each epoch. `rank` and `world_size` shard the indices so
    that each process of a multi-device run takes its own part.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        return self.n // self.world_size

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 1)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        order = order[self.rank: self._per_rank() * self.world_size: self.world_size]
        for start in range(0, len(self), 1):
            yield self.epoch, order[start * self.batch_size: (start + 1) * self.batch_size]


@dataclass(frozen=True)
class Split:
    """A split as rows of the training file's images, which it shares with the other split: a
    folder near the memory limit would not fit twice, nor a few labeled images repeated to fill
    an epoch (a twin's) as copies. Each batch is gathered from the rows."""

    source: Tensor  # uint8 images, the whole training file
    rows: Tensor  # the split's images in `source`
    labels: Tensor
    positions: Tensor  # each image's row in the augmentation's table of uniforms

    @property
    def images(self) -> Tensor:
        return self.source[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device: torch.device) -> Split:
        return Split(*(t.to(device) for t in (self.source, self.rows, self.labels, self.positions)))


class GatherBatches(TorchDataset):
    """Answers an (epoch, index batch) with (uint8 images, labels, positions in split, epoch)."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, Tensor]) -> tuple[Tensor, Tensor, Tensor, int]:
        epoch, batch = item
        split = self.split
        return split.source[split.rows[batch]], split.labels[batch], split.positions[batch], epoch


def batch_loader(split: Split, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> DataLoader:
    sampler = IndexBatches(len(split), batch_size, shuffle, seed, drop_last=shuffle, rank=rank,
                           world_size=world_size)
    # batch_size=None: the sampler already yields whole batches, gathered in one indexing op.
    return DataLoader(GatherBatches(split), sampler=sampler, batch_size=None)


class DataModule(L.LightningDataModule):
    """Training images minus a fixed validation slice, augmented on the device; clean validation.

    dataset: the dataset (`distill.datasets`), MNIST by default.
    data_dir: its folder (None: the dataset's environment variable, else its cache folder).
    batch_size: images per training step.
    augment: augmentation of the training images (None: none).
    seed: drives the shuffling and the augmentation; same seed, same batches.
    train_size: use only the first N training images (quick trials and tests).
    views: differently augmented copies of each image in a training batch (batch augmentation,
        Hoffer et al. 2019): a step sees batch_size x views samples, an epoch as many steps.
        The first copy is drawn with `augment` as it is, the others `at_full_range`: with a
        random magnitude, one copy stays close to a clean digit and the next spans the ranges.
    labeled_fraction, exclude_classes: the transfer set (`distill.transfer`). The excluded
        classes' images leave training and validation. Images beyond the labeled fraction are
        kept as UNLABELED where `keep_unlabeled` (a distilled student: the teacher labels them);
        otherwise training takes the labeled images alone, repeated to fill an epoch of the
        same number of steps (a twin), each repeat with an augmentation of its own.
    """

    def __init__(self, data_dir: Path | str | None = None, batch_size: int = 128,
                 augment: Augment | None = Augment(), seed: int = 0,
                 train_size: int | None = None, views: int = 1,
                 dataset: Dataset | None = None, labeled_fraction: float = 1.0,
                 exclude_classes: list[int] | tuple[int, ...] = (),
                 keep_unlabeled: bool = False) -> None:
        super().__init__()
        self.data_dir, self.batch_size, self.augment, self.seed = data_dir, batch_size, augment, seed
        self.train_size, self.views = train_size, views
        self.dataset = dataset or get_dataset("mnist")
        self.labeled_fraction, self.exclude_classes = labeled_fraction, list(exclude_classes)
        self.keep_unlabeled = keep_unlabeled

    @classmethod
    def for_run(cls, config, data_dir: Path | str | None, train_size: int | None,
                dataset: Dataset, distilled: bool) -> DataModule:
        """The data of a run of this `TrainConfig`, as a distilled student or as a network
        trained on labels (a twin, a teacher)."""
        return cls(data_dir, config.batch_size, config.augment, config.seed, train_size,
                   config.views, dataset, config.labeled_fraction, config.exclude_classes,
                   keep_unlabeled=distilled)

    def prepare_data(self) -> None:
        self.dataset.load("train", self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        images, labels = self.dataset.load("train", self.data_dir)
        self.rows = len(images)  # the augmentation's table of uniforms has a row per image
        train_idx, val_idx = self.dataset.split_indices(len(images))
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        train_idx = train_idx[kept_classes(labels[train_idx], self.exclude_classes)]
        val_idx = val_idx[kept_classes(labels[val_idx], self.exclude_classes)]
        train_labels, val_labels = labels[train_idx], labels[val_idx]
        positions = train_idx
        if self.labeled_fraction < 1:
            labeled = labeled_mask(train_labels, self.labeled_fraction, self.seed)
            self.labeled_images = int(labeled.sum())
            val_labels = val_labels.masked_fill(
                ~labeled_mask(val_labels, self.labeled_fraction, self.seed + 1), UNLABELED)
            if self.keep_unlabeled:
                train_labels = train_labels.masked_fill(~labeled, UNLABELED)
            else:
                if not labeled.any():
                    raise DistillError("A network trained on labels needs a labeled fraction "
                                       "above 0 (data.labeled_fraction).")
                repeats = math.ceil(len(train_idx) / int(labeled.sum()))
                train_idx = train_idx[labeled].repeat(repeats)[: len(train_idx)]
                train_labels = labels[train_idx]
                # Each repeat has its own row of augmentation parameters.
                positions = torch.arange(len(train_idx))
        else:
            self.labeled_images = len(train_idx)
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.train_split = Split(images, train_idx, train_labels, positions).to(device)
        self.val_split = Split(self.train_split.source, val_idx, val_labels, val_idx).to(device)
        self._uniforms: dict[int, tuple[int, Tensor]] = {}  # view: (epoch, uniforms)

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        # batch_size is the batch of all processes: each takes its share of every batch.
        rank, world_size = self._rank()
        return batch_loader(self.train_split, self.batch_size // world_size, shuffle=True,
                            seed=self.seed, rank=rank, world_size=world_size)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.val_split, EVAL_BATCH, shuffle=False)

    def uniforms(self, epoch: int, device: torch.device, view: int = 0) -> Tensor:
        if self._uniforms.get(view, (None,))[0] != epoch:
            self._uniforms[view] = epoch, augmentation_uniforms(self.seed, epoch, device, view,
                                                                self.rows)
        return self._uniforms[view][1]

    def model_input(self, batch: tuple, training: bool) -> tuple[Tensor, Tensor, Tensor, int]:
        """A gathered batch as the model sees it: (images, labels, positions in split, epoch);
        in training, `views` augmented copies of the batch one after the other. With CutMix the
        labels are each image's share of every class, (B, classes) floats."""
        images, labels, positions, epoch = batch
        x = to_unit(images)
        if training and self.augment is not None:
            specs = [self.augment, *[self.augment.at_full_range] * (self.views - 1)]
            drawn = [self.uniforms(epoch, x.device, view)[positions] for view in range(self.views)]
            x = torch.cat([augment(x, uniforms, spec) for uniforms, spec in zip(drawn, specs)])
            labels, positions = labels.repeat(self.views), positions.repeat(self.views)
            if self.augment.cutmix:
                x, own = cutmix(x, torch.cat(drawn), self.augment.cutmix)
                one_hot = F.one_hot(labels, self.dataset.num_classes).to(x.dtype)
                labels = own[:, None] * one_hot + (1 - own[:, None]) * one_hot.roll(1, dims=0)
        return normalize(x, self.dataset), labels, positions, epoch

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        training = self.trainer is not None and self.trainer.training
        return self.model_input(batch, training)
