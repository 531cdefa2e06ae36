"""Function matching (Beyer et al., CVPR 2022, "Knowledge distillation: A good teacher is patient
and consistent"): the student matches the teacher's outputs on the very same input, an augmented
view with mixup applied, by KL alone (no labels), over a long schedule.

The mixup is a pure function of (seed, epoch, image index), like the augmentation: image i of a
batch is mixed with the image before it in the batch (the batches are already shuffled), with a
weight drawn for index i. So the teacher's logits on the mixed views can be cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from distill.augment import UNIFORMS_ROWS
from distill.methods.base import Method, Outputs
from distill.methods.kd import soft_kl

MIXUP_STREAM = 7_919  # keeps the mixing weights' random stream apart from the augmentation's


@dataclass(frozen=True)
class FunctionMatchingParams:
    """temperature: softens both distributions; mixup_alpha: the mixing weight is drawn from
    Beta(mixup_alpha, mixup_alpha); 0 turns mixup off."""

    temperature: float = 1.0
    mixup_alpha: float = 1.0


def mixing_weights(seed: int, epoch: int, alpha: float, rows: int = UNIFORMS_ROWS) -> Tensor:
    """(rows,) weights of each image against its partner, row i for split index i. numpy fills
    the rows in order, so a longer draw starts with the same weights."""
    rng = np.random.default_rng([seed, epoch, MIXUP_STREAM])
    return torch.from_numpy(rng.beta(alpha, alpha, max(rows, UNIFORMS_ROWS)).astype(np.float32))


class FunctionMatching(Method):
    name = "function_matching"
    Params = FunctionMatchingParams
    uses_labels = False
    ranges = [
        ("temperature", lambda v: 0 < v <= 100, "greater than 0 and at most 100"),
        ("mixup_alpha", lambda v: 0 <= v <= 100, "between 0 and 100"),
    ]

    def __init__(self, params: FunctionMatchingParams, seed: int = 0) -> None:
        super().__init__(params, seed)
        self._weights: tuple[int, Tensor] | None = None  # (epoch, weights), one epoch at a time

    def view(self, x: Tensor, positions: Tensor, epoch: int) -> Tensor:
        if self.params.mixup_alpha == 0:
            return x
        rows = int(positions.max()) + 1
        if self._weights is None or self._weights[0] != epoch or len(self._weights[1]) < rows:
            self._weights = epoch, mixing_weights(self.seed, epoch, self.params.mixup_alpha, rows)
        lam = self._weights[1].to(x.device)[positions].view(-1, *[1] * (x.dim() - 1))
        return lam * x + (1 - lam) * x.roll(1, dims=0)

    def view_key(self) -> dict | None:
        return {"mixup_alpha": self.params.mixup_alpha} if self.params.mixup_alpha else None

    def terms(self, student: Outputs, teacher: Outputs, labels: Tensor,
              progress: float | None) -> dict[str, Tensor]:
        return {"kd": soft_kl(student.logits, teacher.logits, self.params.temperature)}
