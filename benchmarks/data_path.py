"""Data path: the project's batched augmentation on the device against a torchvision DataLoader
with per-image RandomAffine (the usual way), in augmented training images per second.

    python benchmarks/data_path.py [--images 20000] [--workers 2]
"""

from __future__ import annotations

import argparse

import torch
from common import median_seconds, print_table
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from distill.data import MNIST_MEAN, MNIST_STD, MNISTDataModule, load_split


class PerImage(Dataset):
    """The baseline: one image at a time through torchvision's transforms."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.transform = v2.Compose([
            v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([MNIST_MEAN], [MNIST_STD]),
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    images, labels = load_split("train")
    images, labels = images[: args.images], labels[: args.images]
    baseline = DataLoader(PerImage(images, labels), batch_size=args.batch_size, shuffle=True,
                          num_workers=args.workers, persistent_workers=args.workers > 0)

    def run_baseline():
        for x, y in baseline:
            x.to(device), y.to(device)

    datamodule = MNISTDataModule(batch_size=args.batch_size, train_size=args.images)
    datamodule.setup("fit")
    datamodule.train_split = [t.to(device) for t in datamodule.train_split]
    ours = datamodule.train_dataloader()

    def run_ours():
        for batch in ours:
            x, *_ = datamodule.model_input(batch, training=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    n = len(images)
    base = n / median_seconds(run_baseline)
    fast = n // args.batch_size * args.batch_size / median_seconds(run_ours)
    print_table(f"Augmented training images per second ({n} images, batch {args.batch_size}, "
                f"{device.type}, median of 3)", ["data path", "images/s", "ratio"],
                [[f"DataLoader + per-image RandomAffine, {args.workers} workers", f"{base:,.0f}",
                  "1.00"],
                 ["distill: batched affine_grid/grid_sample on the device", f"{fast:,.0f}",
                  f"{fast / base:.1f}x"]])


if __name__ == "__main__":
    main()
