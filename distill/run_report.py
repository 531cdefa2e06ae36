"""What a run's report.json holds, typed: the one description of its fields.

`runs.train_run` builds it, `report.save_report` writes it and `report.load_report` reads it
back; every other module reads these keys. They are typed dicts rather than dataclasses because
the report is JSON on disk that older runs wrote with fewer keys (the optional ones below), and a
dict reads those as they are. A type checker holds every use to these names.
"""

from __future__ import annotations

import sys
from typing import Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # Python 3.10: from typing_extensions, which torch requires
    from typing_extensions import NotRequired


class Accuracy(TypedDict):
    top1: float
    top2: float
    ece: float  # expected calibration error, 15 bins


class MostConfused(TypedDict):
    true: int
    predicted: int
    count: int


class Evaluation(TypedDict):
    test: Accuracy
    augmented_test: Accuracy  # the test set with the dataset's heavy augmentation, fixed seed
    test_images: int
    augmented_with: NotRequired[str]  # the heavy augmentation in words (absent: MNIST's, 30/20/20)
    per_class_accuracy: dict[str, float]  # class index (as a string) to test top-1
    most_confused: list[MostConfused]
    confusion_matrix: list[list[int]]
    teacher_agreement: NotRequired[float]  # students and twins: same class as the teacher


class Training(TypedDict):
    epochs_run: int
    best_epoch: int  # counted from 0: the epoch whose weights were kept
    seconds: float
    device: str
    epoch_seconds: list[float]
    images_per_epoch: int
    seed: int


class Cost(TypedDict):
    parameters: int
    bytes: int  # of weights.safetensors
    flops: int  # per image
    latency_ms: float  # CPU, batch 1
    throughput: float  # CPU, images/s at batch 512


class ClassFigures(TypedDict):
    top1: float
    omitted_top1: float  # on the test images of the classes never seen
    others_top1: float


class Omitted(TypedDict):
    """The classes never seen in training, before and after a label-free bias on their logits."""

    classes: list[int]
    bias: dict[str, float]
    before: ClassFigures
    after: ClassFigures
    validation_agreement: NotRequired[float]
    chosen_on: str


class Transfer(TypedDict):
    labeled_fraction: float
    labeled_images: int
    excluded_classes: list[int]
    omitted: NotRequired[Omitted]


class Validation(TypedDict):
    loss: float  # cross-entropy, the figure a teacher run keeps its epoch by
    top1: float


class InitValidation(TypedDict):
    """A run started from trained weights (--init): them and the kept epoch, on the same
    validation images."""

    validation_images: int
    start: Validation
    kept: Validation


class RunReport(TypedDict):
    name: str
    run_dir: str
    model: str  # the network's name in distill.nets
    kind: str  # teacher, student or twin
    command: str
    dataset: NotRequired[str]  # runs from before datasets: mnist
    classes: NotRequired[list[str]]
    config: dict[str, Any]  # training.TrainConfig as JSON
    distillation: dict[str, Any] | None  # the method's name and parameters; None without one
    training: Training
    evaluation: Evaluation
    transfer: NotRequired[Transfer]  # runs from before transfer sets: every label, every class
    cost: Cost
    environment: dict[str, str]  # versions and the git commit of the code
    recipe: NotRequired[str]
    init_sha256: NotRequired[str]  # a run given --init: the starting weights' digest
    init_validation: NotRequired[InitValidation]  # a teacher run given --init
    teacher: NotRequired[str]  # students and twins: the teachers' paths, comma-separated
    teacher_sha256: NotRequired[str]
    gain_over_twin: NotRequired[float]  # students with a twin: test top-1 difference
    twin: NotRequired[str]  # that twin's run folder
    run: NotRequired[str]  # the folder it was read from (the tables across runs), not on disk


def dataset_shown(report: dict) -> str:
    """How tables and plots name a run's data: its dataset, and a folder's image size where it
    is not the default 28 (`folder:/x at 64x64`): networks of other inputs are not compared."""
    return data_shown(report.get("dataset", "mnist"), report.get("config", {}).get("image_size", 28))


def data_shown(dataset: str, size: int) -> str:
    """A dataset's name, and the image size where it is not the default 28."""
    return dataset + (f" at {size}x{size}" if size != 28 else "")
