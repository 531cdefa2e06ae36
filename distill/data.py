"""MNIST: the IDX files, batched augmentation on the training device, and the DataModule.

The whole split is one uint8 tensor (47 MB for the 60k training images). Batches are gathered
by index and augmented as whole batches with `affine_grid`/`grid_sample`, so the hot path holds
no per-image Python. The random parameters of an image's augmentation depend only on
(seed, epoch, index): the same view comes out whatever the batch it lands in.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.errors import DistillError

NUM_CLASSES = 10
IMAGE_SIZE = 28
# Mean and standard deviation of the 60k training images' pixels in [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

DATA_DIR_ENV = "DISTILL_DATA_DIR"
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000)}
FILE_NAMES = [name for images, labels, _ in SPLITS.values() for name in (images, labels)]
# sha256 of the uncompressed files: the check that holds whatever the compression.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ubyte data, 3 dimensions (images) or 1 (labels)
VALIDATION_SIZE = 5_000
TRAIN_SIZE = SPLITS["train"][2] - VALIDATION_SIZE
# Validation and test images go through a network in batches of this size. The teacher's cached
# validation logits are computed in the same batches, so they equal those of the online path.
# On a CPU, batches of 1000 take the teacher over twice as long per image as batches of 128, whose
# activations stay in the cache (benchmarks/eval_batch.py); on a GPU the size hardly matters here.
EVAL_BATCH = 128
# The validation slice is the same for every run, whatever the run's seed.
VALIDATION_SPLIT_SEED = 20_250_121


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distill" / "mnist"


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """`--data-dir`, else $DISTILL_DATA_DIR, else the cache folder."""
    if data_dir:
        folder = Path(data_dir).expanduser()
    elif os.environ.get(DATA_DIR_ENV):
        folder = Path(os.environ[DATA_DIR_ENV]).expanduser()
    else:
        folder = default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise DistillError(f"{folder} is a file: point --data-dir (or ${DATA_DIR_ENV}) at the "
                           "folder that holds the MNIST files.")
    return folder


def _missing_files_hint(folder: Path) -> str:
    return (f"Put the four MNIST files ({', '.join(FILE_NAMES)}, each may end in .gz) in {folder}, "
            f"or point --data-dir or ${DATA_DIR_ENV} at a folder that has them.")


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def download_mnist(folder: Path) -> None:
    """Fetch the missing files with torchvision's own mirrors and checksums."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in MNIST.resources:
        if _find(folder, filename.removesuffix(".gz")):
            continue
        errors = []
        for mirror in MNIST.mirrors:
            try:
                download_url(f"{mirror}{filename}", root=str(folder), filename=filename, md5=md5)
                break
            except Exception as error:  # noqa: BLE001 - every mirror failing is reported below
                errors.append(f"{mirror}: {error}")
        else:
            raise DistillError(f"Could not download {filename} into {folder} ({errors[-1]}). "
                               + _missing_files_hint(folder))


def _read_bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DistillError(f"{path} is not a readable gzip file ({error}). "
                           f"Replace it with a fresh copy of {path.name}.") from error


def _parse_idx(raw: bytes, path: Path) -> Tensor:
    """The header's magic number and shape checked against the bytes that follow."""
    name = path.name.removesuffix(".gz")
    ndim = 3 if "images" in name else 1
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != IDX_MAGIC[ndim]:
        raise DistillError(f"{path} is not an MNIST IDX file (magic number {magic}, expected "
                           f"{IDX_MAGIC[ndim]}). Replace it with a fresh copy of {name}.")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected_bytes = 4 + 4 * ndim + math.prod(shape)
    if len(raw) != expected_bytes:
        raise DistillError(f"{path} is truncated or padded: {len(raw)} bytes where its header "
                           f"promises {expected_bytes}. Replace it with a fresh copy of {name}.")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=4 + 4 * ndim).view(*shape)


def _verify_checksum(raw: bytes, path: Path) -> None:
    name = path.name.removesuffix(".gz")
    if name in SHA256 and hashlib.sha256(raw).hexdigest() != SHA256[name]:
        raise DistillError(f"{path} fails its sha256 check: the file is damaged or not the "
                           f"official {name}. Replace it with a fresh copy.")


def read_idx(path: Path) -> Tensor:
    """One IDX file (gzip or not) as a uint8 tensor, its header and checksum verified."""
    raw = _read_bytes(path)
    tensor = _parse_idx(raw, path)
    _verify_checksum(raw, path)
    return tensor


@lru_cache(maxsize=4)
def _load_split_cached(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    images_name, labels_name, count = SPLITS[split]
    paths = [_find(folder, images_name), _find(folder, labels_name)]
    if None in paths:
        raise DistillError(f"MNIST files missing in {folder}. " + _missing_files_hint(folder))
    raws = [_read_bytes(path) for path in paths]
    images, labels = (_parse_idx(raw, path) for raw, path in zip(raws, paths))
    if len(images) != len(labels) or len(images) != count:
        raise DistillError(f"{folder}: {len(images)} images and {len(labels)} labels in the "
                           f"{split} split, expected {count} of each. "
                           "Replace the files with fresh copies.")
    for raw, path in zip(raws, paths):
        _verify_checksum(raw, path)
    return images, labels.long()


def load_split(split: str, data_dir: Path | str | None = None, download: bool = True
               ) -> tuple[Tensor, Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of 'train' or 'test'.

    Downloads the files that are missing, unless `download` is False.
    """
    folder = resolve_data_dir(data_dir)
    images_name, labels_name, _ = SPLITS[split]
    if download and not (_find(folder, images_name) and _find(folder, labels_name)):
        download_mnist(folder)
    return _load_split_cached(folder.resolve(), split)


def train_val_indices(n: int = 60_000, val_size: int = VALIDATION_SIZE) -> tuple[Tensor, Tensor]:
    """A fixed random split of the training set: (train indices, validation indices)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SPLIT_SEED))
    return order[val_size:].sort().values, order[:val_size].sort().values


def validation_images(data_dir: Path | str | None = None) -> Tensor:
    """The validation slice of the training images, in the order validation sees them."""
    images, _ = load_split("train", data_dir)
    return images[train_val_indices(len(images))[1]]


@dataclass(frozen=True)
class Augment:
    """Random affine augmentation, drawn per image.

    With `random_magnitude` (as in TrivialAugment), an image's rotation, shift and zoom are
    further scaled by a magnitude of its own: most images change a little, a few span the full
    ranges, so a network can learn the extremes without losing the look of undistorted digits.

    degrees: rotation drawn from [-degrees, degrees].
    translate: shift in each axis drawn from [-translate, translate], as a fraction of the size.
    scale: zoom drawn from [1 - scale, 1 + scale].
    """

    degrees: float = 15.0
    translate: float = 0.1
    scale: float = 0.1
    random_magnitude: bool = False  # each image's ranges times its own uniform draw from [0, 1]

    def scaled(self, strength: float) -> Augment:
        return replace(self, degrees=self.degrees * strength, translate=self.translate * strength,
                       scale=self.scale * strength)

    @property
    def at_full_range(self) -> Augment:
        """The same ranges with every image drawn across them, no magnitude of its own."""
        return replace(self, random_magnitude=False)

    @property
    def is_identity(self) -> bool:
        return self.degrees == 0 and self.translate == 0 and self.scale == 0


# The "heavily augmented" test set: twice the default training ranges (30 degrees, 20% shifts,
# zoom 0.8-1.2), drawn with a fixed seed so that every model is scored on the same images.
HEAVY_AUGMENT = Augment(degrees=30.0, translate=0.2, scale=0.2)
HEAVY_AUGMENT_SEED = 1_234


# One row per image of the largest split, so that a row depends on nothing but (seed, epoch, index).
UNIFORMS_ROWS = 60_000


def augmentation_uniforms(seed: int, epoch: int, device: torch.device | str = "cpu",
                          view: int = 0) -> Tensor:
    """(60000, 5) uniforms, row i for split index i: rotation, shift x, shift y, zoom in [-1, 1],
    then the magnitude in [0, 1]. `view` numbers the extra copies of batch augmentation."""
    generator = torch.Generator().manual_seed((seed + 1000 * view) * 100_003 + epoch)
    # Drawn after the other four, so that adding it left every earlier run's augmentation as it was.
    signed = torch.rand(UNIFORMS_ROWS, 4, generator=generator) * 2 - 1
    magnitude = torch.rand(UNIFORMS_ROWS, 1, generator=generator)
    return torch.cat([signed, magnitude], dim=1).to(device)


def augment(images: Tensor, uniforms: Tensor, spec: Augment) -> Tensor:
    """Rotate, shift and zoom each image of a (B, 1, H, W) float batch by its own row of uniforms."""
    if spec.is_identity:
        return images
    signed = uniforms[:, :4] * uniforms[:, 4:5] if spec.random_magnitude else uniforms[:, :4]
    angle = signed[:, 0] * math.radians(spec.degrees)
    shift = signed[:, 1:3] * spec.translate * 2  # grid coordinates span [-1, 1]
    zoom = 1 + signed[:, 3] * spec.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates, so this is the inverse of "zoom, rotate, shift".
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    offset = -(rotation @ shift.unsqueeze(-1))
    theta = torch.cat([rotation, offset], dim=-1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_unit(images: Tensor) -> Tensor:
    """uint8 (B, 28, 28) to float (B, 1, 28, 28) in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


def normalize(images: Tensor) -> Tensor:
    return (images - MNIST_MEAN) / MNIST_STD


def prepare(images: Tensor, indices: Tensor | None = None, spec: Augment | None = None,
            seed: int = 0, epoch: int = 0) -> Tensor:
    """uint8 images to the model's input, augmented where a spec and the images' indices are given.

    `indices` are the images' positions in their split: they pick each image's random parameters.
    """
    x = to_unit(images)
    if spec is not None and not spec.is_identity:
        x = augment(x, augmentation_uniforms(seed, epoch, images.device)[indices], spec)
    return normalize(x)


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


class GatherBatches(Dataset):
    """Answers an (epoch, index batch) with (uint8 images, labels, positions in split, epoch)."""

    def __init__(self, images: Tensor, labels: Tensor, positions: Tensor) -> None:
        self.images, self.labels, self.positions = images, labels, positions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, Tensor]) -> tuple[Tensor, Tensor, Tensor, int]:
        epoch, batch = item
        return self.images[batch], self.labels[batch], self.positions[batch], epoch


def batch_loader(images: Tensor, labels: Tensor, positions: Tensor, batch_size: int,
                 shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    sampler = IndexBatches(len(images), batch_size, shuffle, seed, drop_last=shuffle,
                           rank=rank, world_size=world_size)
    # batch_size=None: the sampler already yields whole batches, gathered in one indexing op.
    return DataLoader(GatherBatches(images, labels, positions), sampler=sampler, batch_size=None)


class MNISTDataModule(L.LightningDataModule):
    """Training images minus a fixed validation slice, augmented on the device; clean validation.

    data_dir: folder of the IDX files (None: $DISTILL_DATA_DIR, else the cache folder).
    batch_size: images per training step.
    augment: augmentation of the training images (None: none).
    seed: drives the shuffling and the augmentation; same seed, same batches.
    train_size: use only the first N training images (quick trials and tests).
    views: differently augmented copies of each image in a training batch (batch augmentation,
        Hoffer et al. 2019): a step sees batch_size x views samples, an epoch as many steps.
        The first copy is drawn with `augment` as it is, the others `at_full_range`: with a
        random magnitude, one copy stays close to a clean digit and the next spans the ranges.
    """

    def __init__(self, data_dir: Path | str | None = None, batch_size: int = 128,
                 augment: Augment | None = Augment(), seed: int = 0,
                 train_size: int | None = None, views: int = 1) -> None:
        super().__init__()
        self.data_dir, self.batch_size, self.augment, self.seed = data_dir, batch_size, augment, seed
        self.train_size, self.views = train_size, views

    def prepare_data(self) -> None:
        load_split("train", self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        images, labels = load_split("train", self.data_dir)
        train_idx, val_idx = train_val_indices(len(images))
        if self.train_size is not None:
            train_idx = train_idx[: self.train_size]
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.train_split = [t.to(device) for t in (images[train_idx], labels[train_idx], train_idx)]
        self.val_split = [t.to(device) for t in (images[val_idx], labels[val_idx], val_idx)]
        self._uniforms: dict[int, tuple[int, Tensor]] = {}  # view: (epoch, uniforms)

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        return batch_loader(*self.train_split, self.batch_size, shuffle=True, seed=self.seed,
                            rank=self._rank()[0], world_size=self._rank()[1])

    def val_dataloader(self) -> DataLoader:
        return batch_loader(*self.val_split, EVAL_BATCH, shuffle=False)

    def uniforms(self, epoch: int, device: torch.device, view: int = 0) -> Tensor:
        if self._uniforms.get(view, (None,))[0] != epoch:
            self._uniforms[view] = epoch, augmentation_uniforms(self.seed, epoch, device, view)
        return self._uniforms[view][1]

    def model_input(self, batch: tuple, training: bool) -> tuple[Tensor, Tensor, Tensor, int]:
        """A gathered batch as the model sees it: (images, labels, positions in split, epoch);
        in training, `views` augmented copies of the batch one after the other."""
        images, labels, positions, epoch = batch
        x = to_unit(images)
        if training and self.augment is not None:
            specs = [self.augment, *[self.augment.at_full_range] * (self.views - 1)]
            x = torch.cat([augment(x, self.uniforms(epoch, x.device, view)[positions], spec)
                           for view, spec in enumerate(specs)])
            labels, positions = labels.repeat(self.views), positions.repeat(self.views)
        return normalize(x), labels, positions, epoch

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        training = self.trainer is not None and self.trainer.training
        return self.model_input(batch, training)
