"""A folder of your own images, in torchvision's ImageFolder layout: one subfolder per class,
either in `train/` and `test/` trees (and a `val/` tree, whose images then validate), or in a
single tree from which a fixed, seeded share is held out as the test set. Every image (any size,
any mode) is decoded once into one uint8 tensor at a fixed size, in grayscale or RGB, so the
batched data path and the teacher-logits cache work as they do for MNIST."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.augment import Augment
from distill.datasets.base import (
    FOLDER_PREFIX,
    Dataset,
    cache_home,
    folder_root,
    has_control_character,
    shown_classes,
)
from distill.errors import DistillError
from distill.pictures import MAX_PIXELS, TOO_LARGE, decode_file, reading_pictures

TEST_SHARE = 1 / 6  # MNIST's 10,000 of 70,000
SPLIT_SEED = 20_261_201  # the held-out test images are the same on every run
HEAVY_FOLDER = Augment(degrees=20.0, translate=0.15, scale=0.15)  # a folder's augmented test set
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
MAX_IMAGES = 1_000_000
DECODED_FORMAT = 9  # of the files in ~/.cache/distill/folders: a change decodes every folder again
TRAIN, VALIDATION, TEST = 0, 1, 2  # the split of each decoded image
# A folder whose subfolders are a train/ tree and these is split by them, as ImageNet's (train/,
# val/), Roboflow's (train/, valid/, test/) and many others are; the names are matched in any case.
TREE_NAMES = {"train": TRAIN, "training": TRAIN, "val": VALIDATION, "valid": VALIDATION,
              "validation": VALIDATION, "test": TEST, "testing": TEST}


# Folders of what a system keeps beside the pictures, never of a class's images: a zip made on a
# Mac (its AppleDouble "._" files), a Synology NAS (its thumbnails), and any hidden one.
SIDE_FOLDERS = {"__MACOSX", "@eaDir"}


def visible(name: str) -> bool:
    """Whether a file or folder of this name is one of the pictures' (not hidden, not a side
    folder)."""
    return not name.startswith(".") and name not in SIDE_FOLDERS


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and visible(p.name))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and all(visible(part) for part in p.relative_to(folder).parts))


def split_trees(root: Path) -> dict[int, Path]:
    """The folder's tree for each split it has (TRAIN always: the folder itself when it has no
    train/ tree)."""
    folders = class_folders(root)
    named = [f for f in folders if f.name.lower() in TREE_NAMES]
    trained = any(TREE_NAMES[f.name.lower()] == TRAIN for f in named)
    if named and len(named) == len(folders) and not trained:
        raise DistillError(f"{root} holds {' and '.join(f.name + '/' for f in named)} but no "
                           f"train/ tree: put the training images' class folders in {root}/train.")
    if not trained or len(named) == 1 < len(folders):
        return {TRAIN: root}  # the classes, one of which may be called train (bus/, car/, train/)
    if others := [f.name for f in folders if f not in named]:
        raise DistillError(f"{root} holds {', '.join(f.name + '/' for f in named)} and "
                           f"{', '.join(name + '/' for name in others)}: its subfolders are either "
                           "a train/ tree with test/ and val/ trees beside it, or the classes.")
    trees: dict[int, Path] = {}
    for tree in named:
        if (split := TREE_NAMES[tree.name.lower()]) in trees:
            raise DistillError(f"{root} has both {trees[split].name}/ and {tree.name}/: keep one "
                               "of them (or merge them).")
        trees[split] = tree
    return dict(sorted(trees.items()))


def training_images_among(trained: Path, scored: Path, whole: bool) -> str | None:
    """Why scoring the folder `scored` would count images of the folder `trained` a network was
    trained on (a tree of it other than its test/ tree, or, scored whole, a folder holding it),
    judged by their paths; None where it would not."""
    if scored == trained:
        return None  # scored as trained: its own test images
    if scored.is_relative_to(trained):
        try:
            test_tree = split_trees(trained).get(TEST)
        except DistillError:
            test_tree = None
        if test_tree is None or not scored.is_relative_to(test_tree):
            return f"{scored} is within {trained}"
    elif whole and trained.is_relative_to(scored):
        return f"{scored} holds {trained}"
    return None


@dataclass(frozen=True)
class Layout:
    """A folder's class folders and their files, per split (TRAIN always; VALIDATION and TEST
    where the folder has such a tree), as listed once per command."""

    root: Path
    trees: dict[int, Path]
    files: dict[int, dict[str, list[Path]]]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.files[TRAIN])

    def tree(self, split: int) -> str:
        """How messages name a split's tree: "val/" (or "" for a folder of classes)."""
        tree = self.trees.get(split)
        return f"{tree.name}/" if tree is not None and tree != self.root else ""


@lru_cache(maxsize=4)  # a command asks thrice (dataset, decoding, summary): 70,000 files list in 1.6 s
def check_layout(root: Path) -> Layout:
    """The folder's trees and their class folders' files, each checked."""
    if not root.is_dir():
        raise DistillError(f"No folder at {root}: --dataset takes mnist, fashion-mnist or a "
                           "folder of class subfolders.")
    trees = split_trees(root)
    held_out = TEST not in trees  # a share of each class of the training tree tests
    files = {}
    for split, tree in trees.items():
        classes = class_folders(tree)
        if not classes:
            raise DistillError(f"{tree} has no class subfolders: put each class's images in a "
                               "folder of its own (e.g. cats/, dogs/).")
        if len(classes) == 1:
            raise DistillError(f"{tree} has one class folder ({classes[0].name}/): a classifier "
                               "needs at least two, each in a folder of its own.")
        if odd := next((c.name for c in classes if has_control_character(c.name)), None):
            # Class names are printed and kept in the weights, which refuse them (export.py).
            raise DistillError(f"{tree}: the class folder {odd!r} has a control character in "
                               "its name: rename it.")
        found = {c.name: image_files(c) for c in classes}
        check_no_runs(tree, found)
        if empty := [name for name, paths in found.items() if not paths]:
            raise DistillError(f"{tree}: the class folder {empty[0]}/ holds no image.")
        if split == TRAIN and held_out and (
                single := [name for name, paths in found.items() if len(paths) == 1]):
            raise DistillError(f"{tree}: the class folder {single[0]}/ holds one image, which "
                               "would be held out for testing and never trained on: give each "
                               "class at least two (or a test/ tree beside train/).")
        if split != TRAIN and list(found) != list(files[TRAIN]):
            raise DistillError(f"{root}: {trees[TRAIN].name}/ and {tree.name}/ have different "
                               f"classes ({', '.join(files[TRAIN])} against {', '.join(found)}).")
        files[split] = found
    return Layout(root, trees, files)


def check_no_runs(tree: Path, found: dict[str, list[Path]]) -> None:
    """Refuse a class folder that holds distill's runs (made inside the folder of images by an
    older distill, or copied there): their plots are not a class. One look per folder listed."""
    from distill.files import RUN_MARKER

    for name, paths in found.items():
        if run := next((folder for folder in dict.fromkeys(path.parent for path in paths)
                        if (folder / RUN_MARKER).is_file()), None):
            raise DistillError(f"{tree}: the class folder {name}/ holds distill's runs "
                               f"({run.relative_to(tree)}/), not images of a class: move it out "
                               f"of {tree}.")


@dataclass(frozen=True)
class FolderDataset(Dataset):
    """root: the folder; read by `decoded` at `size` x `size`.
    validation_tree: the folder's tree of validation images ("val"), or "" when a fixed share
    of the training images validates."""

    root: str = ""
    fingerprint: str = ""  # changes with any added, removed or edited file (teacher-logits keys)
    validation_tree: str = ""

    def load(self, split: str, data_dir: Path | str | None = None, download: bool = True
             ) -> tuple[Tensor, Tensor]:
        """The training split holds the validation tree's images last (`split_indices`). Views of
        the decoded folder, which holds the test images last: no copy of a big folder."""
        check_no_data_dir(self.name, data_dir)
        images, labels, splits, _ = decoded(Path(self.root), self.size)
        trained = int((splits != TEST).sum())
        return ((images[:trained], labels[:trained]) if split == "train" else
                (images[trained:], labels[trained:]))

    def split_indices(self, n: int) -> tuple[Tensor, Tensor]:
        if not self.validation_tree:
            return super().split_indices(n)
        return torch.arange(n - self.validation_size), torch.arange(n - self.validation_size, n)

    def summary(self) -> str:
        """What was found in the folder, in a sentence a command prints before training on it."""
        train, test = len(self.load("train")[1]), len(self.load("test")[1])
        layout = check_layout(Path(self.root))
        held_out = f"held out of {layout.tree(TRAIN)}" if layout.tree(TRAIN) else "held out"
        tested = (f"its {layout.tree(TEST)} tree" if layout.tree(TEST) else
                  f"{held_out} at random, the same on every run")
        validated = (f"{train - self.validation_size:,} training images, "
                     f"{self.validation_size:,} validation images (its {self.validation_tree}/ "
                     "tree)" if self.validation_tree else
                     f"{train:,} training images ({self.validation_size:,} of them for validation)")
        return (f"{self.root}: {self.num_classes} classes ({shown_classes(self.classes)}), "
                f"{validated} and {test:,} test images ({tested}), decoded in "
                f"{'grayscale' if self.channels == 1 else 'RGB'} at {self.size}x{self.size}."
                + self.size_hint(layout))

    def size_hint(self, layout: Layout) -> str:
        """A sentence for photos decoded at the default size, which keeps little of them."""
        if self.size != Dataset.size or not (side := shorter_side(layout)) or side < 4 * self.size:
            return ""
        return (f" Its pictures are about {side:,} pixels on their shorter side: --image-size 64 "
                f"keeps more of them, for about {(64 / self.size) ** 2:.0f} times the compute "
                "per image.")


def check_no_data_dir(dataset: str, data_dir: Path | str | None) -> None:
    """Refuse --data-dir with a folder dataset, which would seem to point elsewhere and be
    ignored; commands ask before decoding the folder."""
    if data_dir and dataset.startswith(FOLDER_PREFIX):
        raise DistillError(f"--data-dir is for the files of mnist and fashion-mnist; a folder of "
                           f"images ({folder_root(dataset)}) is named by --dataset alone.")


def check_runs_outside(dataset: str, runs: Path, option: str) -> None:
    """Refuse runs written inside the folder of images they train on (`cd photos; distill
    teacher --dataset .`): their plots would be read as a class of it by the next command."""
    root = folder_root(dataset)
    if dataset.startswith(FOLDER_PREFIX) and runs.resolve().is_relative_to(root):
        raise DistillError(f"{runs} is inside {root}, the folder of images: its plots would be "
                           f"read as a class of it. Run distill from another folder, or give "
                           f"{option} outside it.")


def shorter_side(layout: Layout, sample: int = 51) -> int | None:
    """The median shorter side of a sample of the training pictures, from their headers."""
    from PIL import Image

    paths = [path for paths in layout.files[TRAIN].values() for path in paths]
    sides = []
    for path in paths[:: max(1, len(paths) // sample)][:sample]:
        try:
            with reading_pictures(), Image.open(path) as image:
                sides.append(min(image.size))
        except Exception:  # noqa: BLE001, S112 - an unreadable file is reported when decoding
            continue
    return int(np.median(sides)) if sides else None


def folder_dataset(root: Path, size: int = 28) -> FolderDataset:
    """The dataset of a folder: classes from its subfolders, channels from its images' modes,
    mean and standard deviation from its training images."""
    root = root.expanduser().resolve()
    layout = check_layout(root)
    images, labels, splits, fingerprint = decoded(root, size)
    channels = 1 if images.dim() == 3 else 3
    mean, std = pixel_statistics(images, splits == TRAIN)
    if VALIDATION in layout.files:
        validation_tree, validation_size = layout.trees[VALIDATION].name, int(
            (splits == VALIDATION).sum())
        if not validation_size:
            raise DistillError(f"{layout.trees[VALIDATION]}: none of its files is a readable image.")
    else:
        validation_tree, validation_size = "", max(1, int((splits == TRAIN).sum()) // 10)
    return FolderDataset(name=f"{FOLDER_PREFIX}{root}", classes=layout.classes, mean=mean, std=std,
                         channels=channels, size=size,
                         augment=Augment(degrees=10.0, translate=0.1, scale=0.1),
                         teacher_augment=Augment(15.0, 0.1, 0.1, random_magnitude=True),
                         heavy_augment=HEAVY_FOLDER,
                         validation_size=validation_size, root=str(root),
                         fingerprint=fingerprint, validation_tree=validation_tree)


def pixel_statistics(images: Tensor, chosen: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and standard deviation per channel of the chosen images' pixels in [0, 1].
    Counted from each channel's histogram of byte values, a few images at a time: exact, and the
    folder as floats would take four times its bytes, twice over (a folder that fits in memory
    would not, here)."""
    images = images.unsqueeze(1) if images.dim() == 3 else images
    indices = chosen.nonzero().flatten()
    step = max(1, 2**20 // images[0, 0].numel())  # bincount counts in int64: 8 MB at a time
    counts = torch.zeros(images.shape[1], 256, dtype=torch.float64)
    for start in range(0, len(indices), step):
        part = images[indices[start:start + step]]
        for channel in range(images.shape[1]):
            counts[channel] += torch.bincount(part[:, channel].flatten(), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255
    pixels = counts.sum(1)
    mean = (counts * values).sum(1) / pixels
    variance = (counts * (values - mean[:, None]) ** 2).sum(1) / (pixels - 1).clamp_min(1)
    return tuple(mean.tolist()), tuple(variance.sqrt().clamp_min(1e-3).tolist())


def mode_of(path: Path) -> str | None:
    from PIL import Image

    try:
        with reading_pictures(), Image.open(path) as image:
            return image.mode
    except Exception:  # noqa: BLE001 - an unreadable image is reported when decoding
        return None


def decoded_channels(entries: list[tuple[Path, int, int]]) -> int:
    """1 where every training image is grayscale (its header says so), else 3. Every file is
    asked (50 us each here): a colour photo among gray scans is not read in gray."""
    gray = all(mode_of(path) in GRAY_MODES for path, _, split in entries if split == TRAIN)
    return 1 if gray else 3


@lru_cache(maxsize=4)
def decoded(root: Path, size: int) -> tuple[Tensor, Tensor, Tensor, str]:
    """Every image of the folder at size x size (N x size x size in grayscale, N x 3 x size x
    size in RGB), its label, its split (TRAIN, VALIDATION, then TEST: the images are in that
    order), and the folder's fingerprint (of its files' paths, labels, sizes and times): decoded
    once, then read back from distill's cache while the files are unchanged."""
    layout = check_layout(root)
    entries = folder_entries(layout)
    if len(entries) > MAX_IMAGES:
        raise DistillError(f"{root} holds {len(entries):,} files, over the {MAX_IMAGES:,} distill "
                           "decodes into memory.")
    check_memory(root, len(entries) * size * size, size)  # in grayscale, the least it can take
    kept = decoded_file(root, size, entries)
    if (found := read_kept(kept)) is None:
        channels = decoded_channels(entries)
        check_memory(root, len(entries) * channels * size * size, size)
        found = decode_entries(root, size, channels, entries, TEST not in layout.files)
        keep_decoded(found, kept, root)
    warn_skipped(found["skipped"], f" in {root}")
    warn_skipped(found["too_large"], f" in {root}", f"has over {MAX_PIXELS:,} pixels",
                 f"have over {MAX_PIXELS:,} pixels", ": make such files smaller to use them")
    check_readable_classes(layout, set(found["skipped"]) | set(found["too_large"]))
    warn_test_copies(found, root, size)
    return found["images"], found["labels"], found["splits"], kept.stem.rsplit("-", 1)[-1]


def warn_test_copies(found: dict, root: Path, size: int) -> None:
    """Say in a line how many test images are, pixel for pixel, also training or validation
    images (some exports copy them), naming the first pair: the test score counts them as new."""
    tested = found["splits"] == TEST
    trained = dict(zip(found["digests"][~tested].tolist(), (~tested).nonzero().flatten().tolist(),
                       strict=True))
    copies = [(row, trained[digest]) for row, digest in zip(
        tested.nonzero().flatten().tolist(), found["digests"][tested].tolist(), strict=True)
        if digest in trained]
    if copies:
        test_file, train_file = (found["files"][row] for row in copies[0])
        warnings.warn(f"{len(copies):,} of the {int(tested.sum()):,} test images of {root} are, "
                      f"pixel for pixel at {size}x{size}, also among its training or validation "
                      f"images ({test_file} is {train_file}{', ...' * (len(copies) > 1)}): the "
                      "test score counts them as new. Remove the copies to test on new images "
                      "only.", stacklevel=3)


def digests(images: Tensor) -> Tensor:
    """A 64-bit digest of each image's pixels (equal images, equal digests): computed once when a
    folder is decoded, kept with it, and compared with other images' without decoding again."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(image.numpy().tobytes(), digest_size=8)
                                        .digest(), "little", signed=True) for image in images],
                        dtype=torch.int64)


def check_readable_classes(layout: Layout, skipped: set[str]) -> None:
    """Refuse a class folder whose files were all skipped (a Thumbs.db and a note), as an empty
    one is: the network would have a class it never sees. In a training tree that holds out its
    test images, one readable image is refused as one file is."""
    for split, classes in layout.files.items():
        for name, paths in classes.items():
            readable = sum(str(path) not in skipped for path in paths)
            folder = layout.trees[split] / name
            if not readable:
                raise DistillError(f"{folder}: none of its {len(paths)} files is a readable image "
                                   f"({paths[0].name}{', ...' * (len(paths) > 1)}): give the class "
                                   "images, or remove its folder.")
            if readable == 1 and split == TRAIN and TEST not in layout.files:
                raise DistillError(f"{folder}: one of its files is a readable image, which would "
                                   "be held out for testing and never trained on: give each "
                                   "class at least two (or a test/ tree beside train/).")


def folder_entries(layout: Layout) -> list[tuple[Path, int, int]]:
    """(file, label, split) of every file of the folder, in its order."""
    return [(path, label, split) for split, tree in layout.files.items()
            for label, paths in enumerate(tree.values()) for path in paths]


def read_kept(kept: Path) -> dict | None:
    """A decoded folder as `keep_decoded` wrote it; None where it is absent or damaged (then it
    is decoded again and replaced)."""
    try:
        return torch.load(kept, weights_only=True) if kept.is_file() else None
    except Exception:  # noqa: BLE001 - damaged: decoded again
        return None


def kept_decoding(root: Path, size: int) -> dict | None:
    """The folder at `root` decoded at `size` as distill's cache holds it, where it holds it as
    the files are now; nothing is decoded to find out."""
    try:
        return read_kept(decoded_file(root, size, folder_entries(check_layout(root))))
    except DistillError:
        return None


def trained_among(root: Path, size: int, images: Tensor, scored: Path | None = None
                  ) -> tuple[int, int, str] | None:
    """How many of `images` are, pixel for pixel, among the training and validation images of
    the folder at `root` decoded at `size`, how many those are, and the first copy named ("its
    file is the training file", where `scored`, the folder the images come from, is kept too);
    None where distill's cache does not hold that folder as its files are now (nothing is
    decoded to find out)."""
    found = kept_decoding(root, size)
    if found is None or found["images"].shape[1:] != images.shape[1:]:
        return None  # not kept, or read in another mode: no pixel can match
    trained = found["splits"] != TEST
    rows = dict(zip(found["digests"][trained].tolist(), trained.nonzero().flatten().tolist(),
                    strict=True))
    copied = [digest for digest in digests(images).tolist() if digest in rows]
    if not copied:
        return 0, int(trained.sum()), ""
    first = str(root / found["files"][rows[copied[0]]])
    if scored is not None and (copy := file_of(scored, size, copied[0])):
        first = f"{copy} is {first}"
    return len(copied), int(trained.sum()), first


def file_of(root: Path, size: int, digest: int) -> Path | None:
    """The file of the folder at `root` whose image at `size` has this digest, where distill's
    cache holds the folder as its files are now."""
    found = kept_decoding(root, size)
    if found is None or not (rows := (found["digests"] == digest).nonzero()).numel():
        return None
    return root / found["files"][int(rows[0])]


def warn_skipped(paths: list, where: str = "", one: str = "is not a readable image",
                 many: str = "are not readable images", why: str = "") -> None:
    """One warning line for the files of a folder that were skipped, counted, the first named."""
    if paths:
        which = f"1 file {one} and was" if len(paths) == 1 else f"{len(paths):,} files {many} and were"
        warnings.warn(f"{which} skipped{where} ({paths[0]}{', ...' * (len(paths) > 1)}){why}.",
                      stacklevel=2)  # the line of distill that read them: one plain line


def check_memory(root: Path, needed: int, size: int) -> None:
    """Refuse, before decoding, a folder whose images would not fit in a third of this machine's
    memory at this size: training holds them all (the fast data path; once, its splits are rows
    of them), decoding about 1.3 times (benchmarks/folder_decode.py), the rest is the system's and
    other programs', and the system would otherwise end the command without a word after minutes
    of decoding."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): not checked
        return
    if needed > memory // 3:
        raise DistillError(f"{root} decoded at {size}x{size} takes {needed / 2**30:.1f} GiB, over "
                           f"a third of this machine's {memory / 2**30:.0f} GiB of memory: give a "
                           "smaller --image-size, or fewer images.")


def decoded_file(root: Path, size: int, entries: list[tuple[Path, int, int]]) -> Path:
    """Where a folder's decoded images are kept between commands: named by the folder and the
    size, and keyed by every file's path, label, size and modification time, so that an added,
    removed or edited image decodes the folder again (and its channels are chosen again)."""
    key = hashlib.sha256(f"{DECODED_FORMAT}|{size}\n".encode())
    for path, label, split in entries:
        stat = path.stat()
        key.update(f"{path.relative_to(root)}|{label}|{split}|{stat.st_size}|"
                   f"{stat.st_mtime_ns}\n".encode())
    settings = hashlib.sha256(f"{root}|{size}".encode()).hexdigest()[:8]
    return cache_home() / "folders" / f"{root.name}-{settings}-{key.hexdigest()[:16]}.pt"


def keep_decoded(found: dict, kept: Path, root: Path) -> None:
    """Write the decoded folder beside its earlier versions' files, which it replaces; skipped
    where it cannot be written or the disk has not twice its size free (the next command decodes
    the folder again)."""
    from distill.files import atomic_path

    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(kept.parent).free < 2 * found["images"].nbytes:
            return
        with atomic_path(kept) as tmp:
            torch.save(found, tmp)
    except OSError:  # a cache that cannot be written (read-only home, full disk) is only slower
        return
    prefix = kept.name.rsplit("-", 1)[0] + "-"
    for older in kept.parent.glob(f"{prefix}*.pt"):
        if older != kept:
            older.unlink(missing_ok=True)
    print(f"Decoded {len(found['labels']):,} images of {root} once, kept in "
          f"{kept}", file=sys.stderr, flush=True)


PARALLEL_BYTES = 64 * 2**20  # past this, photos rather than thumbnails: decoded by every core


def decoding_processes(entries: list[tuple[Path, int, int]]) -> int:
    """Worker processes for decoding: one per core for a folder of photos (an iPhone's HEIC
    takes a second to decode here); none for small images, where starting them costs more."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2 or sum(path.stat().st_size for path, _, _ in entries) < PARALLEL_BYTES:
        return 0
    return min(cores, len(entries))


@contextmanager
def ctrl_c_ignored():
    """Processes started inside ignore Ctrl-C: they inherit the setting, and Python then leaves
    it so. The command answers Ctrl-C in one line; each worker would print its own traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler, and only it receives the signal
        return
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


@contextmanager
def main_module_hidden():
    """Workers started inside do not run the program's main module. A spawned worker imports it
    first, as `__mp_main__`: distill's own command would import torch in each worker for nothing
    (`decode_file` needs `distill.pictures` alone), and a user's script without `if __name__ ==
    "__main__":` would decode the folder again in each, which multiprocessing ends with a
    traceback a worker. Hidden as an interactive session's main module is (no file, no spec)."""
    main = sys.modules["__main__"]
    hidden = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(hidden)


def decode_entries(root: Path, size: int, channels: int, entries: list[tuple[Path, int, int]],
                   hold_out: bool, processes: int | None = None) -> dict:
    """Decode the files: images, labels, splits, and the files skipped.
    hold_out: a fixed share of each class's training images becomes the test set.
    processes: worker processes (None: `decoding_processes`; 0: this one)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from rich.console import Console
    from rich.progress import Progress

    processes = decoding_processes(entries) if processes is None else processes
    jobs = [(str(path), size, channels) for path, _, _ in entries]
    console = Console(stderr=True)  # stdout stays the command's own (--json)
    console.print(f"Decoding the {len(entries):,} files of {root} at {size}x{size}"
                  f"{f' in {processes} processes' if processes else ''}.", highlight=False)
    # Each image is written into the folder's array as it arrives: a list of them, stacked, would
    # hold a big folder twice more.
    pixels = np.empty((len(entries), *((size, size) if channels == 1 else (3, size, size))),
                      np.uint8)
    outcomes: list[str | None] = []  # None: decoded; else why not (pictures.TOO_LARGE, ...)

    def keep(results) -> None:
        outcomes.clear()
        for k, result in enumerate(results):
            if not isinstance(result, str):
                pixels[k] = result if channels == 1 else result.transpose(2, 0, 1)
            outcomes.append(result if isinstance(result, str) else None)

    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        if not processes:
            keep(decode_file(job) for job in bar.track(jobs, description="Decoding"))
        else:
            # Spawned, not forked: a fork of a process that runs torch's threads can hang.
            pool = ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"))
            try:
                with ctrl_c_ignored(), main_module_hidden():  # from the workers map starts
                    answers = pool.map(decode_file, jobs, chunksize=8)
                keep(bar.track(answers, total=len(jobs), description="Decoding"))
            except BrokenProcessPool:  # a program read from stdin: no main module to spawn
                keep(decode_file(job) for job in bar.track(jobs, description="Decoding"))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    decodable = [k for k, outcome in enumerate(outcomes) if outcome is None]
    if not decodable:
        raise DistillError(f"{root}: none of its files is a readable image.")
    labels = torch.tensor([entries[k][1] for k in decodable], dtype=torch.long)
    splits = torch.tensor([entries[k][2] for k in decodable], dtype=torch.uint8)
    if hold_out:  # a fixed share of every class's training images held out as the test set
        generator = torch.Generator().manual_seed(SPLIT_SEED)
        for label in labels.unique():
            members = ((labels == label) & (splits == TRAIN)).nonzero().flatten()
            chosen = members[torch.randperm(len(members), generator=generator)]
            splits[chosen[: max(1, round(len(members) * TEST_SHARE))]] = TEST
    # Train, validation and test images one after the other, each in the folder's order:
    # `FolderDataset.load` then returns views.
    order = torch.argsort(splits, stable=True)
    images = torch.from_numpy(rows_in_place(pixels, decodable, order.tolist()))
    return {"images": images, "labels": labels[order], "splits": splits[order],
            "digests": digests(images),
            "files": [str(entries[decodable[k]][0].relative_to(root)) for k in order.tolist()],
            "skipped": [str(entries[k][0]) for k, why in enumerate(outcomes)
                        if why is not None and why != TOO_LARGE],
            "too_large": [str(entries[k][0]) for k, why in enumerate(outcomes) if why == TOO_LARGE]}


def rows_in_place(array: np.ndarray, kept: list[int], order: list[int]) -> np.ndarray:
    """`array[kept][order]`, moved within `array` (a view of its first rows): by hand, a row at a
    time along the permutation's cycles, because numpy's indexing copies, and a folder's decoded
    images twice over were the most a command held."""
    for new, old in enumerate(kept):  # ascending: a row is read before it is written over
        if new != old:
            array[new] = array[old]
    done = bytearray(len(order))
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        first, row = array[start].copy(), start
        while True:  # row takes what `order` asks for it; the cycle ends back at `start`
            done[row] = 1
            source = order[row]
            if source == start:
                array[row] = first
                break
            array[row] = array[source]
            row = source
    return array[: len(kept)]
