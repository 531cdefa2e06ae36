"""What every dataset says about itself: its classes, image shape, normalisation, augmentations,
and how its two splits are loaded (each as one uint8 tensor, checked)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from distill.augment import Augment
from distill.errors import DistillError

# The "heavily augmented" test set: 30 degrees, 20% shifts, zoom 0.8-1.2, for datasets of digits.
HEAVY_DIGITS = Augment(degrees=30.0, translate=0.2, scale=0.2)
# The validation slice is the same for every run, whatever the run's seed.
VALIDATION_SPLIT_SEED = 20_250_121


def train_val_indices(n: int = 60_000, val_size: int = 5_000) -> tuple[Tensor, Tensor]:
    """A fixed random split of the training set: (train indices, validation indices)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SPLIT_SEED))
    return order[val_size:].sort().values, order[:val_size].sort().values


@dataclass(frozen=True)
class Dataset:
    """A dataset distill trains and scores on.

    name: how commands, recipes, run reports and weights files name it.
    classes: the class names, in label order.
    mean, std: per channel, of the training images' pixels in [0, 1].
    channels, size: of the images (size x size).
    augment: a sensible default augmentation of the training images for a student.
    teacher_augment: the teacher's (also scaled by `distill teacher --augment`).
    heavy_augment: the augmented test set's, drawn with a fixed seed.
    validation_size: training images held out for validation (early stopping, kept epoch).
    framing: how `distill predict` and the demo fit a user's picture to the dataset's images:
        "digit" (MNIST's: the ink in a 20x20 box, centred by its mass), "object" (Fashion-MNIST's:
        the object trimmed of its background, its longer side the image's, centred) or "resize"
        (the whole picture resized, as a folder's images were decoded). "digit" and "object" take
        either polarity: a light background is inverted, as the datasets' images are light on black.
    """

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 1
    size: int = 28
    augment: Augment = field(default_factory=lambda: Augment(7.5, 0.05, 0.05))
    teacher_augment: Augment = field(default_factory=lambda: Augment(30.0, 0.2, 0.2, True))
    heavy_augment: Augment = HEAVY_DIGITS
    validation_size: int = 5_000
    framing: str = "resize"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, split: str, data_dir: Path | str | None = None, download: bool = True
             ) -> tuple[Tensor, Tensor]:
        """Images (N, H, W) for one channel or (N, C, H, W), uint8, and labels (N,) int64."""
        raise NotImplementedError

    def split_indices(self, n: int) -> tuple[Tensor, Tensor]:
        """(training indices, validation indices) of the `n` images of the training split: a
        fixed random `validation_size` of them validate."""
        return train_val_indices(n, self.validation_size)

    def training_images(self, data_dir: Path | str | None = None) -> int:
        """How many images a run trains on: the training split less its validation images."""
        return len(self.load("train", data_dir)[1]) - self.validation_size

    def network_kwargs(self) -> dict:
        """What a network needs to know of the dataset, beyond MNIST's shape (none for MNIST's
        shape, so that its weights files stay as they were)."""
        kwargs = {}
        if self.num_classes != 10:
            kwargs["num_classes"] = self.num_classes
        if self.channels != 1:
            kwargs["in_chans"] = self.channels
        if self.size != 28:
            kwargs["img_size"] = self.size
        return kwargs


def shown_classes(names: tuple | list, most: int = 6) -> str:
    """Class names as a command prints them: the first few, then an ellipsis."""
    return ", ".join(map(str, names[:most])) + (", ..." if len(names) > most else "")


def data_folder(data_dir: Path | str | None, env: str, default: Path) -> Path:
    """`--data-dir`, else the environment variable, else the default folder."""
    if data_dir:
        folder = Path(data_dir).expanduser()
    elif os.environ.get(env):
        folder = Path(os.environ[env]).expanduser()
    else:
        folder = default
    if folder.exists() and not folder.is_dir():
        raise DistillError(f"{folder} is a file: point --data-dir (or ${env}) at the folder that "
                           "holds the dataset's files.")
    return folder


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill"


def has_control_character(text: str) -> bool:
    """Whether printing `text` could drive a terminal (an escape sequence, a bell)."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


FOLDER_PREFIX = "folder:"  # a folder dataset's name: folder:/its/full/path


def folder_root(name: str) -> Path:
    """The folder a dataset's name names (`folder:PATH`, as `dataset_name` and reports write it)."""
    return Path(name.removeprefix(FOLDER_PREFIX))
