"""Data path: the project's batched augmentation on the device against a torchvision DataLoader
with per-image RandomAffine (the usual way), in augmented training images per second: the data
path alone, then training a student (the same training step fed by each path).

    python benchmarks/data_path.py [--images 20000] [--workers 2] [--student convnet_tiny]
"""

from __future__ import annotations

import argparse

import timm
import torch
import torch.nn.functional as F
from common import median_seconds, print_table
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import distill.nets  # noqa: F401 - registers the students with timm
from distill.data import NUM_CLASSES, DataModule, load_split
from distill.datasets import get_dataset

mnist = get_dataset("mnist")


class PerImage(Dataset):
    """The baseline: one image at a time through torchvision's transforms."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.transform = v2.Compose([
            v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mnist.mean, mnist.std),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i].unsqueeze(0)), self.labels[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--student", default="convnet_tiny", help="network trained on the batches")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    images, labels = load_split("train")
    images, labels = images[: args.images], labels[: args.images]
    baseline = DataLoader(PerImage(images, labels), batch_size=args.batch_size, shuffle=True,
                          num_workers=args.workers, persistent_workers=args.workers > 0)

    def baseline_batches():
        for x, y in baseline:
            yield x.to(device), y.to(device)

    def run_baseline():
        for _ in baseline_batches():
            pass

    datamodule = DataModule(batch_size=args.batch_size, train_size=args.images)
    datamodule.setup("fit")
    datamodule.train_split = datamodule.train_split.to(device)
    ours = datamodule.train_dataloader()

    def our_batches():
        for batch in ours:
            x, y, *_ = datamodule.model_input(batch, training=True)
            yield x, y

    def run_ours():
        for _ in our_batches():
            pass
        if device.type == "cuda":
            torch.cuda.synchronize()

    student = timm.create_model(args.student, num_classes=NUM_CLASSES).to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)

    def train_on(batches):
        def run():
            for x, y in batches():
                loss = F.cross_entropy(student(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    n = len(images)
    ours_n = n // args.batch_size * args.batch_size  # ours drops the last partial batch
    base = n / median_seconds(run_baseline)
    fast = ours_n / median_seconds(run_ours)
    train_base = n / median_seconds(train_on(baseline_batches))
    train_fast = ours_n / median_seconds(train_on(our_batches))
    baseline_name = f"DataLoader + per-image RandomAffine, {args.workers} workers"
    ours_name = "distill: batched affine_grid/grid_sample on the device"
    print_table(f"Augmented training images per second ({n} images, batch {args.batch_size}, "
                f"{device.type}, median of 3)", ["data path", "images/s", "ratio"],
                [[baseline_name, f"{base:,.0f}", "1.00"],
                 [ours_name, f"{fast:,.0f}", f"{fast / base:.1f}x"]])
    print_table(f"Training {args.student} on those batches: images per second (same step, "
                "median of 3)", ["data path", "images/s", "ratio"],
                [[baseline_name, f"{train_base:,.0f}", "1.00"],
                 [ours_name, f"{train_fast:,.0f}", f"{train_fast / train_base:.1f}x"]])


if __name__ == "__main__":
    main()
