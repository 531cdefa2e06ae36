"""FitNets hints (Romero et al., ICLR 2015), trained jointly as in mdistiller's FitNet: the
student's last feature map, through a 1x1 conv adapter to the teacher's width, regresses the
teacher's last feature map (mean squared error), on top of KD's loss.

A method that needs more than logits: the teacher runs on every batch, and the adapter is a
trainable part of the method that the optimizer updates with the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.methods.base import Method, Outputs
from distill.methods.kd import KD_RANGES, soft_kl


@dataclass(frozen=True)
class FitNetParams:
    """temperature, alpha: KD's; hint_weight: weight of the feature regression."""

    temperature: float = 4.0
    alpha: float = 0.9
    hint_weight: float = 1.0


class FitNet(Method):
    name = "fitnet"
    Params = FitNetParams
    needs_features = True
    ranges = [*KD_RANGES, ("hint_weight", lambda v: 0 <= v <= 1000, "between 0 and 1000")]

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor) -> None:
        with torch.no_grad():
            s, t = student.forward_features(sample), teacher.forward_features(sample)
        # The student's map is pooled to the teacher's size, then widened by the adapter.
        self.size = tuple(t.shape[-2:])
        self.adapter = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1, bias=False)

    def terms(self, student: Outputs, teacher: Outputs, labels: Tensor,
              progress: float | None) -> dict[str, Tensor]:
        p = self.params
        hint = self.adapter(F.adaptive_avg_pool2d(student.features, self.size))
        return {"kd": p.alpha * soft_kl(student.logits, teacher.logits, p.temperature),
                "ce": (1 - p.alpha) * self.cross_entropy(student.logits, labels),
                "hint": p.hint_weight * F.mse_loss(hint, teacher.features.float())}
