"""How much harder Fashion-MNIST's test set is than the validation images runs keep their epoch
by, measured without any network: the share of each whose nearest training image (in pixels) has
its label. Then a released network's top-1 on both, as it is and with its logits averaged over
the image and its mirror image (flips being part of the dataset's augmentation). For
docs/results.md, Fashion-MNIST; no run is chosen by it.

    python docs/experiments/validation_and_test.py models/digitnet.fashion_mnist
"""

import argparse
from pathlib import Path

import torch

from distill.data import scored_split
from distill.datasets import get_dataset
from distill.export import load_model
from distill.metrics import predict_logits

CHUNK = 500  # query images a step: 500 x 55,000 distances at a time


def nearest_label_agreement(images: torch.Tensor, labels: torch.Tensor, train: torch.Tensor,
                            train_labels: torch.Tensor) -> float:
    """The share of `images` whose nearest training image (Euclidean, in pixels) has their label."""
    train = train.flatten(1).float()
    squared = (train ** 2).sum(1)
    nearest = []
    for start in range(0, len(images), CHUNK):
        query = images[start:start + CHUNK].flatten(1).float()
        nearest.append((squared - 2 * query @ train.T).argmin(1))  # |q|^2 is the same for a row
    return (train_labels[torch.cat(nearest)] == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="A Fashion-MNIST network (run or release).")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Fashion-MNIST's files (default: as `distill` finds them).")
    args = parser.parse_args()
    dataset = get_dataset("fashion-mnist")
    images, labels = dataset.load("train", args.data_dir)
    train_indices, _ = dataset.split_indices(len(labels))
    model, _ = load_model(args.weights)
    print("| images | nearest training image's label | top-1 | top-1, mean with the mirror image |")
    print("| --- | --- | --- | --- |")
    for split in ("validation", "test"):
        scored, truth = scored_split(split, args.data_dir, dataset)
        agreement = nearest_label_agreement(scored, truth, images[train_indices],
                                            labels[train_indices])
        logits = predict_logits(model, scored, dataset=dataset)
        mirrored = predict_logits(model, scored.flip(-1), dataset=dataset)
        top1 = (logits.argmax(1) == truth).float().mean().item()
        both = ((logits + mirrored).argmax(1) == truth).float().mean().item()
        print(f"| {split} ({len(truth):,}) | {100 * agreement:.2f}% | {100 * top1:.2f}% | "
              f"{100 * both:.2f}% |")


if __name__ == "__main__":
    main()
