"""Two processes of one thread (DDP over gloo) against one process of two threads, on the CPU.

Each trains the teacher (or another recipe's network) for the same steps with the same global
batch through `distill teacher`, and the ratio of their training epochs' seconds (from each run's
report, the first epoch left out as warm-up) says what `--devices 2` buys on a CPU. No target:
it tells users what to expect.

    python benchmarks/ddp_cpu.py --steps 60 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_table


def run(folder: Path, devices: int, threads: int, steps: int, epochs: int) -> dict:
    out = folder / f"devices{devices}-threads{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "distill", "teacher", "--accelerator", "cpu",
                    "--devices", str(devices), "--out", str(out), "--epochs", str(epochs),
                    "--train-batches", str(steps), "--val-batches", "2", "--test-images", "256",
                    "--patience", str(epochs), "--no-progress"], env=env, check=True,
                   capture_output=True)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps an epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs, the first one untimed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        one = run(Path(folder), devices=1, threads=2, steps=args.steps, epochs=args.epochs)
        two = run(Path(folder), devices=2, threads=1, steps=args.steps, epochs=args.epochs)
    seconds = {name: statistics.median(r["training"]["epoch_seconds"][1:])
               for name, r in (("one", one), ("two", two))}
    images = one["training"]["images_per_epoch"]
    print_table(f"DigitNet teacher, {args.steps} steps of {images // args.steps} images an epoch "
                "(median of the epochs after the first)",
                ["processes x threads", "seconds an epoch", "images/s", "speed-up",
                 "test top-1 (256 images)"],
                [[label, f"{seconds[key]:.1f}", f"{images / seconds[key]:,.0f}",
                  f"{seconds['one'] / seconds[key]:.2f}x",
                  f"{100 * r['evaluation']['test']['top1']:.2f}%"]
                 for label, key, r in (("1 x 2", "one", one), ("2 x 1", "two", two))])


if __name__ == "__main__":
    main()
