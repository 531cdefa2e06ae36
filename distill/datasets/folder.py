"""A folder of your own images, in torchvision's ImageFolder layout: one subfolder per class,
either under `train/` and `test/`, or in a single tree from which a fixed, seeded share is held
out as the test set. Every image (any size, any mode) is decoded once into one uint8 tensor at a
fixed size, in grayscale or RGB, so the batched data path and the teacher-logits cache work as
they do for MNIST."""

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
from distill.datasets.base import Dataset, cache_home, shown_classes
from distill.errors import DistillError
from distill.pictures import MAX_PIXELS, TOO_LARGE, decode_file, reading_pictures

TEST_SHARE = 1 / 6  # MNIST's 10,000 of 70,000
SPLIT_SEED = 20_261_201  # the held-out test images are the same on every run
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
MAX_IMAGES = 1_000_000
DECODED_FORMAT = 4  # of the files in ~/.cache/distill/folders: a change decodes every folder again


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


@lru_cache(maxsize=4)  # a command asks twice (channels, then decoding): listing 70,000 files takes 1.6 s
def check_layout(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]] | None]:
    """The class folders of the training tree and of the test tree (None: held out), as listed
    once per command."""
    if not root.is_dir():
        raise DistillError(f"No folder at {root}: --dataset takes mnist, fashion-mnist or a "
                           "folder of class subfolders.")
    trees = {"train": root / "train", "test": root / "test"}
    split = all(tree.is_dir() for tree in trees.values())
    found = {}
    for split_name, tree in (trees.items() if split else [("train", root)]):
        classes = class_folders(tree)
        if not classes:
            raise DistillError(f"{tree} has no class subfolders: put each class's images in a "
                               "folder of its own (e.g. cats/, dogs/).")
        if len(classes) == 1:
            raise DistillError(f"{tree} has one class folder ({classes[0].name}/): a classifier "
                               "needs at least two, each in a folder of its own.")
        files = {c.name: image_files(c) for c in classes}
        if empty := [name for name, paths in files.items() if not paths]:
            raise DistillError(f"{tree}: the class folder {empty[0]}/ holds no image.")
        if not split and (single := [name for name, paths in files.items() if len(paths) == 1]):
            raise DistillError(f"{tree}: the class folder {single[0]}/ holds one image, which "
                               "would be held out for testing and never trained on: give each "
                               "class at least two (or train/ and test/ trees).")
        found[split_name] = files
    if split and list(found["train"]) != list(found["test"]):
        raise DistillError(f"{root}: train/ and test/ have different classes ("
                           f"{', '.join(found['train'])} against {', '.join(found['test'])}).")
    return found["train"], found.get("test")


@dataclass(frozen=True)
class FolderDataset(Dataset):
    """root: the folder; read by `decoded` at `size` x `size`."""

    root: str = ""
    fingerprint: str = ""  # changes with any added, removed or edited file (teacher-logits keys)

    def load(self, split: str, data_dir: Path | str | None = None, download: bool = True
             ) -> tuple[Tensor, Tensor]:
        images, labels, test, _ = decoded(Path(self.root), self.size, self.channels)
        return (images[~test], labels[~test]) if split == "train" else (images[test],
                                                                          labels[test])

    def summary(self) -> str:
        """What was found in the folder, in a sentence a command prints before training on it."""
        train, test = len(self.load("train")[1]), len(self.load("test")[1])
        root = Path(self.root)
        tested = ("its test/ tree" if (root / "test").is_dir() and (root / "train").is_dir()
                  else "held out at random, the same on every run")
        return (f"{root}: {self.num_classes} classes ({shown_classes(self.classes)}), "
                f"{train:,} training images ({self.validation_size:,} of them for validation) and "
                f"{test:,} test images ({tested}), decoded in "
                f"{'grayscale' if self.channels == 1 else 'RGB'} at {self.size}x{self.size}.")


def folder_dataset(root: Path, size: int = 28) -> FolderDataset:
    """The dataset of a folder: classes from its subfolders, channels from its images' modes,
    mean and standard deviation from its training images."""
    root = root.expanduser().resolve()
    train, test = check_layout(root)
    channels = 1 if all(mode_of(path) in GRAY_MODES for paths in train.values()
                        for path in paths[:20]) else 3
    images, labels, held_out, fingerprint = decoded(root, size, channels)
    pixels = images[~held_out].float().div(255)
    pixels = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    train_count = int((~held_out).sum())
    return FolderDataset(name=f"folder:{root}", classes=tuple(train), mean=mean, std=std,
                         channels=channels, size=size,
                         augment=Augment(degrees=10.0, translate=0.1, scale=0.1),
                         teacher_augment=Augment(15.0, 0.1, 0.1, random_magnitude=True),
                         heavy_augment=Augment(degrees=20.0, translate=0.15, scale=0.15),
                         validation_size=max(1, train_count // 10), root=str(root),
                         fingerprint=fingerprint)


def mode_of(path: Path) -> str | None:
    from PIL import Image

    try:
        with reading_pictures(), Image.open(path) as image:
            return image.mode
    except Exception:  # noqa: BLE001 - an unreadable image is reported when decoding
        return None


@lru_cache(maxsize=4)
def decoded(root: Path, size: int, channels: int) -> tuple[Tensor, Tensor, Tensor, str]:
    """Every image of the folder at size x size, its label, whether it is a test image, and the
    folder's fingerprint (of its files' paths, labels, sizes and times): decoded once, then read
    back from distill's cache while the folder's files are unchanged."""
    train, test = check_layout(root)
    entries = [(path, label, False) for label, paths in enumerate(train.values()) for path in paths]
    if test is not None:
        entries += [(path, label, True) for label, paths in enumerate(test.values())
                    for path in paths]
    if len(entries) > MAX_IMAGES:
        raise DistillError(f"{root} holds {len(entries):,} files, over the {MAX_IMAGES:,} distill "
                           "decodes into memory.")
    check_memory(root, len(entries) * channels * size * size, size)
    kept = decoded_file(root, size, channels, entries)
    try:
        found = torch.load(kept, weights_only=True) if kept.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged file is decoded again and replaced
        found = None
    if found is None:
        found = decode_entries(root, size, channels, entries, test is None)
        keep_decoded(found, kept, root)
    for paths, one, many, why in (
            (found["skipped"], "is not a readable image", "are not readable images", ""),
            (found["too_large"], f"has over {MAX_PIXELS:,} pixels",
             f"have over {MAX_PIXELS:,} pixels", ": make such files smaller to use them")):
        if paths:
            which = (f"1 file {one} and was" if len(paths) == 1 else
                     f"{len(paths):,} files {many} and were")
            warnings.warn(f"{which} skipped in {root} ({paths[0]}{', ...' * (len(paths) > 1)})"
                          f"{why}.", stacklevel=2)
    return found["images"], found["labels"], found["held_out"], kept.stem.rsplit("-", 1)[-1]


def check_memory(root: Path, needed: int, size: int) -> None:
    """Refuse, before decoding, a folder whose images would not fit in half of this machine's
    memory at this size: training holds them all (the fast data path), and the system would
    otherwise end the command without a word after minutes of decoding."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): not checked
        return
    if needed > memory // 2:
        raise DistillError(f"{root} decoded at {size}x{size} takes {needed / 2**30:.1f} GiB, over "
                           f"half of this machine's {memory / 2**30:.0f} GiB of memory: give a "
                           "smaller --image-size, or fewer images.")


def decoded_file(root: Path, size: int, channels: int, entries: list[tuple[Path, int, bool]]
                 ) -> Path:
    """Where a folder's decoded images are kept between commands: named by the folder and the
    settings, and keyed by every file's path, label, size and modification time, so that an
    added, removed or edited image decodes the folder again."""
    key = hashlib.sha256(f"{DECODED_FORMAT}|{size}|{channels}\n".encode())
    for path, label, in_test in entries:
        stat = path.stat()
        key.update(f"{path.relative_to(root)}|{label}|{in_test}|{stat.st_size}|"
                   f"{stat.st_mtime_ns}\n".encode())
    settings = hashlib.sha256(f"{root}|{size}|{channels}".encode()).hexdigest()[:8]
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


def decoding_processes(entries: list[tuple[Path, int, bool]]) -> int:
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


def decode_entries(root: Path, size: int, channels: int, entries: list[tuple[Path, int, bool]],
                   hold_out: bool, processes: int | None = None) -> dict:
    """Decode the files: images, labels, which are test images, and the files skipped.
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
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        if not processes:
            results = [decode_file(job) for job in bar.track(jobs, description="Decoding")]
        else:
            # Spawned, not forked: a fork of a process that runs torch's threads can hang.
            pool = ProcessPoolExecutor(processes, multiprocessing.get_context("spawn"))
            try:
                with ctrl_c_ignored():  # by the workers that map starts
                    answers = pool.map(decode_file, jobs, chunksize=8)
                results = list(bar.track(answers, total=len(jobs), description="Decoding"))
            except BrokenProcessPool:  # a program read from stdin: no main module to spawn
                results = [decode_file(job) for job in bar.track(jobs, description="Decoding")]
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
    images, labels, is_test, skipped, too_large = [], [], [], [], []
    for (path, label, in_test), result in zip(entries, results, strict=True):
        if isinstance(result, str):
            (too_large if result == TOO_LARGE else skipped).append(path)
            continue
        images.append(result)
        labels.append(label)
        is_test.append(in_test)
    if not images:
        raise DistillError(f"{root}: none of its files is a readable image.")
    stacked = torch.from_numpy(np.stack(images))
    if channels == 3:
        stacked = stacked.permute(0, 3, 1, 2).contiguous()
    held_out = torch.tensor(is_test)
    if hold_out:  # a fixed share of every class held out as the test set
        generator = torch.Generator().manual_seed(SPLIT_SEED)
        label_tensor = torch.tensor(labels)
        for label in label_tensor.unique():
            members = (label_tensor == label).nonzero().flatten()
            chosen = members[torch.randperm(len(members), generator=generator)]
            held_out[chosen[: max(1, round(len(members) * TEST_SHARE))]] = True
    return {"images": stacked, "labels": torch.tensor(labels, dtype=torch.long),
            "held_out": held_out, "skipped": [str(path) for path in skipped],
            "too_large": [str(path) for path in too_large]}
