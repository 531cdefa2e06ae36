"""A folder of your own images: decoding photos in worker processes against one process, and the
memory a folder takes against its decoded size.

    python benchmarks/folder_decode.py [--jpegs 24] [--heics 8] [--images 10000] [--size 64]

Writes two folders in a temporary directory. Photos as cameras make them: copies of one JPEG
of 24 megapixels (6000x4000) and of one iPhone-sized HEIC of 12 (4032x3024; encoding it takes
about 20 s here), without the thumbnail a phone embeds in it, so that it is decoded in full (with
one, it takes 10 ms at 64x64). Decoded at --size with `decode_entries` in one process and in the
worker processes the folder gets (the baseline and distill's choice, median of 3 each,
interleaved, each with its workers' start). Then `--images` small RGB PNGs, read by
`get_dataset` in a process of their own, from the files and then from distill's cache: the
process's peak memory beyond what it held before, as a multiple of the decoded images' bytes
(1.0: the folder held once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import interleaved_medians, print_table
from PIL import Image

# Run in a process of its own. Linux resets a process's peak memory (VmHWM) on writing 5 to
# /proc/self/clear_refs: the peak is then get_dataset's alone, not the imports'.
MEMORY = """
import json, sys
import torch  # noqa: F401 - imported before the baseline, as every command imports it
from distill.datasets import get_dataset

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

if __name__ == "__main__":
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    dataset = get_dataset(sys.argv[1], int(sys.argv[2]))
    peak = status("VmHWM")
    images = dataset.load("train")[0].numel() + dataset.load("test")[0].numel()
    print(json.dumps({"grown": peak - before, "images": images}))
"""


def scene(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A smooth picture with sensor noise, which compresses as a photo does."""
    x, y = np.linspace(0, 100, width), np.linspace(0, 50, height)
    pixels = x[None, :, None] + y[:, None, None] + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_photos(root: Path, jpegs: int, heics: int, rng: np.random.Generator) -> None:
    from distill.pictures import read_heic

    read_heic()  # for PIL to write one
    originals = root.parent / "originals"
    originals.mkdir()
    scene(6000, 4000, rng).save(originals / "camera.jpg", quality=90)
    scene(4032, 3024, rng).save(originals / "iphone.heic", quality=80)
    for k in range(jpegs + heics):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        name = "camera.jpg" if k < jpegs else "iphone.heic"
        shutil.copy(originals / name, folder / f"{k}-{name}")


def write_small(root: Path, count: int, size: int, rng: np.random.Generator) -> None:
    for k in range(count):
        folder = root / f"class-{k % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.png", compress_level=0)


def memory(root: Path, size: int, cache: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MEMORY, str(root), str(size)], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jpegs", type=int, default=24,
                        help="Camera JPEGs to decode (with --heics 0 and --jpegs 0, only the "
                             "memory is measured).")
    parser.add_argument("--heics", type=int, default=8, help="iPhone HEICs to decode.")
    parser.add_argument("--images", type=int, default=10_000, help="Small images for memory.")
    parser.add_argument("--size", type=int, default=64, help="Size they are decoded at.")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        photos, small = Path(scratch) / "photos", Path(scratch) / "small"
        write_small(small, args.images, args.size, rng)
        if args.jpegs + args.heics:
            decoding_speed(photos, args, rng)
        memory_table(small, args, Path(scratch) / "cache")


def decoding_speed(photos: Path, args: argparse.Namespace, rng: np.random.Generator) -> None:
    from distill.datasets.folder import TRAIN, check_layout, decode_entries, decoding_processes

    write_photos(photos, args.jpegs, args.heics, rng)
    files = check_layout(photos.resolve()).files[TRAIN]
    entries = [(path, label, TRAIN) for label, paths in enumerate(files.values())
               for path in paths]
    workers = decoding_processes(entries) or os.cpu_count() or 1
    seconds = interleaved_medians({
        n: (lambda n=n: decode_entries(photos, args.size, 3, entries, True, processes=n))
        for n in (0, workers)}, rounds=1)
    megabytes = sum(path.stat().st_size for path, _, _ in entries) / 2**20
    print_table(f"{args.jpegs} JPEGs and {args.heics} HEICs ({megabytes:.0f} MB) decoded at "
                f"{args.size}x{args.size}",
                ["processes", "seconds", "speed-up"],
                [["1 (this one)", f"{seconds[0]:.2f}", "1.00x"],
                 [f"{workers} workers", f"{seconds[workers]:.2f}",
                  f"**{seconds[0] / seconds[workers]:.2f}x**"]])


def memory_table(small: Path, args: argparse.Namespace, cache: Path) -> None:
    rows = []
    for when in ("from the files", "from distill's cache"):
        found = memory(small, args.size, cache)
        rows.append([when, f"{found['images'] / 2**20:.0f} MB",
                     f"{found['grown'] / 2**20:.0f} MB",
                     f"**{found['grown'] / found['images']:.2f}x**"])
    print_table(f"get_dataset on {args.images:,} RGB PNGs at {args.size}x{args.size}: peak memory "
                "beyond the imports", ["read", "decoded images", "peak growth", "multiple"],
                rows)


if __name__ == "__main__":
    main()
