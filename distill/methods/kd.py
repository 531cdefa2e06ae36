"""Hinton et al. (2015): KL divergence on temperature-softened logits, mixed with the labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from distill.methods.base import Method, Outputs


def soft_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch.

    T^2 keeps the soft loss's gradients on the scale of the hard loss's (Hinton et al., 2015).
    """
    return F.kl_div(F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature**2


@dataclass(frozen=True)
class KDParams:
    """temperature: softens both distributions (T); alpha: weight of the soft (teacher) loss."""

    temperature: float = 4.0
    alpha: float = 0.9


KD_RANGES = [
    ("temperature", lambda v: 0 < v <= 100, "greater than 0 and at most 100"),
    ("alpha", lambda v: 0 <= v <= 1, "between 0 and 1"),
]


class KD(Method):
    """alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE(student, labels)."""

    name = "kd"
    Params = KDParams
    ranges = KD_RANGES

    def terms(self, student: Outputs, teacher: Outputs, labels: Tensor,
              progress: float | None) -> dict[str, Tensor]:
        p = self.params
        return {"kd": p.alpha * soft_kl(student.logits, teacher.logits, p.temperature),
                "ce": (1 - p.alpha) * self.cross_entropy(student.logits, labels)}
