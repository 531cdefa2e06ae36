"""The transfer set: which training images keep their labels, which classes the students never see,
and the label-free bias correction for those classes.

A teacher is worth most where labels are scarce. `labeled_fraction` keeps the labels of a seeded,
per-class share of the images (train and validation alike); the others are marked `UNLABELED`,
so a distilled student learns from the teacher on every image and from the labels on the labeled
ones only, while its twin trains on the labeled images alone. `exclude_classes` removes classes
from the transfer set altogether (Hinton et al., 2015: a student that never saw a 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# PyTorch's own `ignore_index`: the cross-entropy and the accuracy metrics skip these labels.
UNLABELED = -100
# The labeled share is drawn from the run's seed plus this, apart from its other random streams.
LABELED_SEED = 7_919


def labeled_mask(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Which images keep their label: `fraction` of each class (at least one where the fraction
    is above zero), drawn from the seed, so that few labels still cover every class."""
    if fraction >= 1:
        return torch.ones(len(labels), dtype=torch.bool)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    if fraction <= 0:
        return mask
    generator = torch.Generator().manual_seed(LABELED_SEED + seed)
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        keep = max(1, round(fraction * len(members)))
        mask[members[torch.randperm(len(members), generator=generator)[:keep]]] = True
    return mask


def kept_classes(labels: Tensor, excluded: list[int] | tuple[int, ...]) -> Tensor:
    """Which images are in the transfer set: those of the classes not excluded."""
    if not excluded:
        return torch.ones(len(labels), dtype=torch.bool)
    return ~torch.isin(labels, torch.tensor(list(excluded), dtype=labels.dtype))


def excluded_text(excluded: list[int] | tuple[int, ...], classes: Sequence[str]) -> str:
    """'no 3' (MNIST's digits are their own names), 'no Dress', or 'only 7, 8' where most classes
    are left out."""
    if len(excluded) > len(classes) / 2:
        return "only " + ", ".join(name for c, name in enumerate(classes) if c not in excluded)
    return "no " + ", ".join(classes[c] for c in excluded)


def labeled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the labeled images of the batch; zero when it has none.

    F.cross_entropy's own ignore_index gives NaN for a batch without a label, which most batches
    are when 0.1% of the images keep theirs. Written without a branch on the labels, so that no
    step waits for the device.
    """
    labeled = labels != UNLABELED
    losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return (losses * labeled).sum() / labeled.sum().clamp(min=1)


def omitted_bias(logits: Tensor, teacher_logits: Tensor, omitted: list[int],
                 rounds: int = 4, steps: int = 40) -> dict[int, float]:
    """A bias for each omitted class's logit such that the network assigns that class the same
    share of these images as the teacher does.

    Only images and the teacher's answers are used, never a label: on the validation images,
    the choice touches neither the test set nor the omitted classes' labels. Each class's share
    grows with its bias, so a bisection finds it; with several omitted classes, a few rounds of
    one bisection per class settle them together.
    """
    target = {c: (teacher_logits.argmax(-1) == c).float().mean().item() for c in omitted}
    bias = torch.zeros(logits.shape[-1])
    for _ in range(rounds if len(omitted) > 1 else 1):
        for c in omitted:
            low, high = -50.0, 50.0
            for _ in range(steps):
                bias[c] = (low + high) / 2
                share = ((logits + bias).argmax(-1) == c).float().mean().item()
                low, high = (bias[c].item(), high) if share < target[c] else (low, bias[c].item())
            bias[c] = (low + high) / 2
    return {c: round(bias[c].item(), 4) for c in omitted}


def omitted_figures(logits: Tensor, labels: Tensor, omitted: list[int]) -> dict[str, float]:
    """Test top-1 overall, on the omitted classes' images and on the others'."""
    correct = logits.argmax(-1) == labels
    on_omitted = torch.isin(labels, torch.tensor(omitted, dtype=labels.dtype))
    return {"top1": correct.float().mean().item(),
            "omitted_top1": correct[on_omitted].float().mean().item(),
            "others_top1": correct[~on_omitted].float().mean().item()}


def logit_shift(bias: dict, classes: int) -> Tensor:
    """The bias of each omitted class (keys: class indices, as ints or as report.json's strings)
    as one vector to add to the logits."""
    shift = torch.zeros(classes)
    for c, value in bias.items():
        shift[int(c)] = value
    return shift


def never_seen(report: dict | None) -> dict | None:
    """A run report's figures and bias for the classes it never saw; None if it saw them all."""
    return ((report or {}).get("transfer") or {}).get("omitted")


def reported_shift(report: dict | None, classes: int) -> Tensor | None:
    """The bias a run's report chose for the classes it never saw, to add to its logits where the
    network is used (evaluate, predict, the demo), as the report's figures "after the bias" do;
    None for a run that saw every class. The weights themselves stay the network as trained."""
    omitted = never_seen(report)
    return None if omitted is None else logit_shift(omitted["bias"], classes)


class WithBias(torch.nn.Module):
    """A network that never saw some classes, answering with its report's bias on their logits
    (`bias`: class index -> value): how `distill evaluate` scores it, as predict and the demo use
    it. The network's own attributes (num_classes, ...) read through."""

    def __init__(self, network: torch.nn.Module, bias: dict) -> None:
        super().__init__()
        self.network = network
        self.bias = {int(c): value for c, value in bias.items()}
        self.register_buffer("shift", logit_shift(bias, network.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x) + self.shift.to(x.device)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.network, name)


def bias_correction(logits: Tensor, labels: Tensor, validation_logits: Tensor,
                    teacher_validation_logits: Tensor, omitted: list[int]) -> dict:
    """What a report says of the omitted classes: test figures before and after the bias, and
    how often the network agrees with the teacher on the validation images after it, a
    label-free score to choose settings by (e.g. the temperature) without the omitted labels."""
    bias = omitted_bias(validation_logits, teacher_validation_logits, omitted)
    shift = logit_shift(bias, logits.shape[-1])
    teacher_says = teacher_validation_logits.argmax(-1)
    return {"classes": omitted, "bias": {str(c): value for c, value in bias.items()},
            "before": omitted_figures(logits, labels, omitted),
            "after": omitted_figures(logits + shift, labels, omitted),
            "validation_agreement": (
                (validation_logits + shift).argmax(-1) == teacher_says).float().mean().item(),
            "chosen_on": "validation images, without labels: each omitted class gets the share "
                         "of them that the teacher assigns it"}
