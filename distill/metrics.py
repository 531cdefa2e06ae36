"""What a trained network achieves and what it costs: accuracy (clean and heavily augmented test
set), calibration, confusion, agreement with a teacher; parameters, bytes, FLOPs, CPU speed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)

from distill.data import EVAL_BATCH, HEAVY_AUGMENT_SEED, prepare, scored_split
from distill.datasets import Dataset, get_dataset
from distill.nets import parameter_count


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Tensor, augmented: bool = False,
                   device: torch.device | str = "cpu", dataset: Dataset | None = None) -> Tensor:
    """Logits for uint8 test images, clean or in their fixed heavily augmented version (the
    dataset's, MNIST's by default)."""
    dataset = dataset or get_dataset("mnist")
    model.eval().to(device)
    out = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = images[start: start + EVAL_BATCH].to(device)
        positions = torch.arange(start, start + len(batch), device=device)
        x = prepare(batch, positions, dataset.heavy_augment if augmented else None,
                    seed=HEAVY_AUGMENT_SEED, dataset=dataset)
        out.append(model(x).float().cpu())
    return torch.cat(out)


def accuracy_figures(logits: Tensor, labels: Tensor) -> dict[str, float]:
    classes = logits.shape[-1]
    top = {k: MulticlassAccuracy(classes, top_k=k, average="micro")(logits, labels).item()
           for k in (1, 2)}
    ece = MulticlassCalibrationError(classes, n_bins=15)(logits.softmax(-1), labels).item()
    loss = torch.nn.functional.cross_entropy(logits, labels).item()  # what runs keep epochs by
    return {"top1": top[1], "top2": top[2], "ece": ece, "loss": loss}


def confusion(logits: Tensor, labels: Tensor) -> Tensor:
    return MulticlassConfusionMatrix(logits.shape[-1])(logits, labels)


def most_confused(matrix: Tensor, count: int = 5) -> list[dict[str, int]]:
    off = matrix.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(count, off.numel()))  # two classes: two mistakes
    classes = len(matrix)
    return [{"true": int(i) // classes, "predicted": int(i) % classes, "count": int(v)}
            for v, i in zip(values, flat) if v > 0]


def input_shape(dataset: Dataset | None) -> tuple[int, int, int]:
    dataset = dataset or get_dataset("mnist")
    return dataset.channels, dataset.size, dataset.size


def flops_per_image(model: nn.Module, dataset: Dataset | None = None) -> int:
    model = model.eval().cpu()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, *input_shape(dataset)))
    return counter.get_total_flops()


@torch.inference_mode()
def cpu_speed(model: nn.Module, repeats: int = 5, dataset: Dataset | None = None
              ) -> dict[str, float]:
    """Median latency at batch 1 (ms) and throughput at batch 512 (images/s), on the CPU."""
    model = model.eval().cpu()

    def median_seconds(batch: Tensor, calls: int) -> float:
        model(batch)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                model(batch)
            times.append((time.perf_counter() - started) / calls)
        return statistics.median(times)

    latency = median_seconds(torch.zeros(1, *input_shape(dataset)), calls=20)
    throughput = 512 / median_seconds(torch.zeros(512, *input_shape(dataset)), calls=1)
    return {"latency_ms": latency * 1000, "throughput": throughput}


SPLITS = ("test", "validation", "all")  # data.scored_split's


def evaluate(model: nn.Module, data_dir: Path | str | None = None, test_size: int | None = None,
             device: torch.device | str = "cpu", dataset: Dataset | None = None,
             split: str = "test") -> dict[str, Any]:
    """Accuracy on the test set (or the validation slice every run selects on, or every image of
    a folder the model was not trained on) and on its heavily augmented copy, and the per-class
    picture. The keys name the split: "test", "augmented_test", "test_images", or "validation",
    "augmented_validation", ..."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    dataset = dataset or get_dataset("mnist")
    images, labels = scored_split(split, data_dir, dataset)
    images, labels = images[:test_size], labels[:test_size]
    clean = predict_logits(model, images, device=device, dataset=dataset)
    heavy = predict_logits(model, images, augmented=True, device=device, dataset=dataset)
    matrix = confusion(clean, labels)
    per_class = (matrix.diag() / matrix.sum(1).clamp(min=1)).tolist()
    return {
        split: accuracy_figures(clean, labels),
        f"augmented_{split}": accuracy_figures(heavy, labels),
        f"{split}_images": len(labels),
        "augmented_with": str(dataset.heavy_augment),
        "per_class_accuracy": {str(c): acc for c, acc in enumerate(per_class)},
        "most_confused": most_confused(matrix),
        "confusion_matrix": matrix.tolist(),
        "_logits": clean,
        "_labels": labels,
        "_images": images,
    }


def agreement(logits: Tensor, predictions: Tensor) -> float:
    """How often the classes these logits pick are the given predictions (a teacher's)."""
    return (logits.argmax(-1) == predictions).float().mean().item()


def scorecard(model: nn.Module, data_dir: Path | str | None = None, test_size: int | None = None,
              teacher_predictions: Tensor | None = None, dataset: Dataset | None = None,
              split: str = "test") -> dict[str, Any]:
    """What `distill evaluate` says of a trained network: size, accuracy on the clean and the
    heavily augmented split, calibration, the classes it confuses, agreement with a teacher."""
    ev = evaluate(model, data_dir, test_size, dataset=dataset, split=split)
    card = {"parameters": parameter_count(model), "flops": flops_per_image(model, dataset),
            **{key: ev[key] for key in (f"{split}_images", split, f"augmented_{split}")},
            "most_confused": ev["most_confused"]}
    if teacher_predictions is not None:
        card["teacher_agreement"] = agreement(ev["_logits"], teacher_predictions)
    return card


def cost(model: nn.Module, weights: Path, dataset: Dataset | None = None) -> dict[str, Any]:
    return {"parameters": parameter_count(model), "bytes": weights.stat().st_size,
            "flops": flops_per_image(model, dataset), **cpu_speed(model, dataset=dataset)}
