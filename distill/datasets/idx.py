"""Datasets in the IDX format of MNIST: four files, gzipped or not, each checked (header, size,
sha256 of the uncompressed bytes) before it is used."""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from distill.datasets.base import Dataset, cache_home, data_folder
from distill.errors import DistillError

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FILE_NAMES = [name for images, labels in SPLITS.values() for name in (images, labels)]
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ubyte data, 3 dimensions (images) or 1 (labels)


@dataclass(frozen=True, eq=False)  # hashed and compared as a Dataset (its dicts are not hashable)
class IdxDataset(Dataset):
    """sha256: of each uncompressed file; counts: images per split; env: the environment variable
    naming its folder; torchvision: the torchvision dataset class whose mirrors download it;
    system_dirs: where a system package installs the files (Debian's dataset packages)."""

    sha256: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"train": 60_000, "test": 10_000})
    env: str = ""
    torchvision: str = ""
    system_dirs: tuple[str, ...] = ()

    def folder(self, data_dir: Path | str | None = None) -> Path:
        """`--data-dir`, else $ENV, else a system package's folder that has the files, else the
        cache folder (downloaded there when missing)."""
        default = cache_home() / self.name
        if not data_dir:
            for system in map(Path, self.system_dirs):
                if all(_find(system, name) for name in FILE_NAMES):
                    default = system
        return data_folder(data_dir, self.env, default)

    def load(self, split: str, data_dir: Path | str | None = None, download: bool = True
             ) -> tuple[Tensor, Tensor]:
        folder = self.folder(data_dir)
        if not all(_find(folder, name) for name in SPLITS[split]):
            check_not_pictures(self, folder)  # nothing is downloaded into a user's photos
            if download:
                download_idx(self, folder)
        return _load_split_cached(self, folder.resolve(), split)

    def missing_files_hint(self, folder: Path) -> str:
        return (f"Put the four {self.name} files ({', '.join(FILE_NAMES)}, each may end in .gz) "
                f"in {folder}, or point --data-dir or ${self.env} at a folder that has them.")


PICTURE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".heic",
                    ".heif"}


def check_not_pictures(dataset: IdxDataset, folder: Path) -> None:
    """Refuse a folder of class folders of pictures given for the IDX files (`--data-dir
    photos`, meaning `--dataset photos`), before anything is downloaded into it."""
    from itertools import islice

    from distill.datasets.folder import class_folders

    if not folder.is_dir():
        return
    for classes in class_folders(folder):
        if any(path.suffix.lower() in PICTURE_SUFFIXES for path in islice(classes.iterdir(), 50)):
            raise DistillError(f"{folder} holds folders of pictures ({classes.name}/, ...), not "
                               f"the {dataset.name} files: to train on them, give --dataset "
                               f"{folder} (--data-dir is for {dataset.name}'s files).")


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def download_idx(dataset: IdxDataset, folder: Path) -> None:
    """Fetch the missing files with torchvision's own mirrors and checksums."""
    import torchvision.datasets
    from torchvision.datasets.utils import download_url

    source = getattr(torchvision.datasets, dataset.torchvision)
    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in source.resources:
        filename = filename.rsplit("/", 1)[-1]
        if _find(folder, filename.removesuffix(".gz")):
            continue
        errors = []
        for mirror in source.mirrors:
            try:
                download_url(f"{mirror}{filename}", root=str(folder), filename=filename, md5=md5)
                break
            except Exception as error:  # noqa: BLE001 - every mirror failing is reported below
                errors.append(f"{mirror}: {error}")
        else:
            raise DistillError(f"Could not download {filename} into {folder} ({errors[-1]}). "
                               + dataset.missing_files_hint(folder))


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
        raise DistillError(f"{path} is not an IDX file (magic number {magic}, expected "
                           f"{IDX_MAGIC[ndim]}). Replace it with a fresh copy of {name}.")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected_bytes = 4 + 4 * ndim + math.prod(shape)
    if len(raw) != expected_bytes:
        raise DistillError(f"{path} is truncated or padded: {len(raw)} bytes where its header "
                           f"promises {expected_bytes}. Replace it with a fresh copy of {name}.")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=4 + 4 * ndim).view(*shape)


def _verify_checksum(raw: bytes, path: Path, sha256: dict[str, str],
                     dataset: IdxDataset | None = None) -> None:
    name = path.name.removesuffix(".gz")
    if name in sha256 and (digest := hashlib.sha256(raw).hexdigest()) != sha256[name]:
        from distill.datasets import DATASETS  # the registry imports this module

        # The IDX datasets share their file names: one's folder given for another is a mix-up.
        other = next((d for d in DATASETS.values() if getattr(d, "sha256", {}).get(name) == digest),
                     None)
        if dataset is not None and other is not None:
            raise DistillError(f"{path} is {other.name}'s {name}, not {dataset.name}'s: point "
                               f"--data-dir (or ${dataset.env}) at a folder of {dataset.name}'s "
                               "files.")
        raise DistillError(f"{path} fails its sha256 check: the file is damaged or not the "
                           f"official {name}. Replace it with a fresh copy.")


def read_idx(path: Path, sha256: dict[str, str] | None = None) -> Tensor:
    """One IDX file (gzip or not) as a uint8 tensor, its header and checksum verified."""
    raw = _read_bytes(path)
    tensor = _parse_idx(raw, path)
    _verify_checksum(raw, path, sha256 or {})
    return tensor


@lru_cache(maxsize=8)
def _load_split_cached(dataset: IdxDataset, folder: Path, split: str) -> tuple[Tensor, Tensor]:
    paths = [_find(folder, name) for name in SPLITS[split]]
    if None in paths:
        raise DistillError(f"{dataset.name} files missing in {folder}. "
                           + dataset.missing_files_hint(folder))
    raws = [_read_bytes(path) for path in paths]
    images, labels = (_parse_idx(raw, path) for raw, path in zip(raws, paths))
    count = dataset.counts[split]
    if len(images) != len(labels) or len(images) != count:
        raise DistillError(f"{folder}: {len(images)} images and {len(labels)} labels in the "
                           f"{split} split, expected {count} of each. "
                           "Replace the files with fresh copies.")
    for raw, path in zip(raws, paths):
        _verify_checksum(raw, path, dataset.sha256, dataset)
    return images, labels.long()
