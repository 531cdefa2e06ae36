"""Datasets by name: MNIST (the default), Fashion-MNIST, or a folder of your own images.

Adding a dataset is one small module defining a `Dataset` and one entry in `DATASETS`.
"""

from __future__ import annotations

import difflib

from distill.datasets.base import FOLDER_PREFIX, Dataset, folder_root, has_control_character
from distill.datasets.fashion_mnist import FASHION_MNIST
from distill.datasets.folder import check_layout, folder_dataset
from distill.datasets.mnist import MNIST
from distill.errors import DistillError
from distill.files import whole_system

DATASETS: dict[str, Dataset] = {d.name: d for d in (MNIST, FASHION_MNIST)}

def get_dataset(name: str = "mnist", image_size: int = 28) -> Dataset:
    """A registered dataset by name, or the folder a path names (`folder:PATH` as reports write
    it, or the path itself): a folder's images are decoded (or read from distill's cache)."""
    name = dataset_name(name, image_size)
    if name in DATASETS:
        return DATASETS[name]
    return folder_dataset(folder_root(name), image_size)


def dataset_name(name: str = "mnist", image_size: int = 28) -> str:
    """The name `get_dataset` gives the dataset (a folder's: `folder:` and its full path),
    checked as far as it can be without reading images: an unknown name, a size, a folder's
    layout. Commands check their other arguments after it, before a folder's decoding."""
    if name in DATASETS:
        if image_size != DATASETS[name].size:  # a registered dataset comes at its own size
            raise DistillError(f"{name}'s images are {DATASETS[name].size}x{DATASETS[name].size}: "
                               f"a size of {image_size} (--image-size) is for a folder of images.")
        return name
    path = folder_root(name)
    if name.startswith(FOLDER_PREFIX) or path.is_dir() or "/" in name:
        if not 8 <= image_size <= 256:
            raise DistillError(f"--image-size {image_size}: give a size from 8 to 256 pixels.")
        if not name.removeprefix(FOLDER_PREFIX):
            raise DistillError("folder: names no folder: give its path, e.g. folder:photos.")
        root = path.expanduser().resolve()
        if has_control_character(str(root)):  # the weights would be refused
            raise DistillError(f"The folder {str(root)!r} has a control character in its path: "
                               "rename it.")
        if reason := whole_system(root):  # before listing every file below it
            raise DistillError(f"{root} is {reason}, not a folder of images: give the folder that "
                               "holds the class folders (e.g. ~/photos).")
        check_layout(root)
        return f"{FOLDER_PREFIX}{root}"
    close = difflib.get_close_matches(name[:60], DATASETS, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise DistillError(f"Unknown dataset {name[:60]!r}.{hint} Give one of {', '.join(DATASETS)}, "
                       "or the path of a folder of class subfolders.")


def dataset_classes(name: str) -> tuple[str, ...]:
    """The class names of a dataset `dataset_name` gave (a folder's from its class folders, no
    image read)."""
    if name in DATASETS:
        return DATASETS[name].classes
    return check_layout(folder_root(name)).classes


def runs_subfolder(name: str) -> str:
    """The subfolder of runs/ that holds a dataset's runs (MNIST's are in runs/ itself): a
    folder's name, found without reading its images, so that a command checks its run folders
    before a folder's minutes of decoding."""
    if name == "mnist":
        return ""
    return name if name in DATASETS else folder_root(name).expanduser().resolve().name


__all__ = ["DATASETS", "Dataset", "dataset_classes", "dataset_name", "folder_root", "get_dataset",
           "runs_subfolder"]
