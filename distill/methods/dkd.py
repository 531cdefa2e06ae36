"""Decoupled KD (Zhao et al., CVPR 2022): KD's loss split into the target class's part (TCKD)
and the non-target classes' part (NCKD), weighted apart.

KD weighs the non-target classes' knowledge by (1 - p_target) of the teacher, which is tiny for a
confident teacher; DKD gives it a weight of its own (beta). Follows the authors' reference code
(mdistiller, `mdistiller/distillers/DKD.py`): the same masks, the -1000 logit offset that removes
the target class from NCKD's softmax, T^2 scaling, and the linear warm-up of the DKD terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.methods.base import Method, Outputs
from distill.transfer import UNLABELED


@dataclass(frozen=True)
class DKDParams:
    """alpha: weight of TCKD; beta: weight of NCKD; temperature: T; ce_weight: weight of the
    hard-label loss; warmup: epochs over which the DKD terms rise linearly to full weight."""

    temperature: float = 4.0
    alpha: float = 1.0
    beta: float = 8.0
    ce_weight: float = 1.0
    warmup: float = 1.0


def dkd_terms(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float
              ) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each scaled by T^2 and averaged over the batch."""
    target = F.one_hot(labels, student.shape[-1]).bool()
    p_student = F.softmax(student / temperature, dim=-1)
    p_teacher = F.softmax(teacher / temperature, dim=-1)
    # Binary distributions: (p_target, 1 - p_target).
    b_student = torch.stack([(p_student * target).sum(-1), (p_student * ~target).sum(-1)], -1)
    b_teacher = torch.stack([(p_teacher * target).sum(-1), (p_teacher * ~target).sum(-1)], -1)
    tckd = F.kl_div(b_student.clamp_min(1e-12).log(), b_teacher, reduction="batchmean")
    # Among the non-target classes only: the target's logit pushed out of the softmax.
    offset = 1000.0 * target
    nckd = F.kl_div(F.log_softmax(student / temperature - offset, dim=-1),
                    F.softmax(teacher / temperature - offset, dim=-1), reduction="batchmean")
    return tckd * temperature**2, nckd * temperature**2


class DKD(Method):
    name = "dkd"
    Params = DKDParams
    ranges = [
        ("temperature", lambda v: 0 < v <= 100, "greater than 0 and at most 100"),
        ("alpha", lambda v: 0 <= v <= 100, "between 0 and 100"),
        ("beta", lambda v: 0 <= v <= 100, "between 0 and 100"),
        ("ce_weight", lambda v: 0 <= v <= 100, "between 0 and 100"),
        ("warmup", lambda v: 0 <= v <= 1000, "between 0 and 1000 (epochs)"),
    ]

    def terms(self, student: Outputs, teacher: Outputs, labels: Tensor,
              progress: float | None) -> dict[str, Tensor]:
        p = self.params
        ramp = 1.0 if progress is None or p.warmup == 0 else min(progress / p.warmup, 1.0)
        # An image without a label takes the teacher's class as its target.
        targets = torch.where(labels == UNLABELED, teacher.logits.argmax(-1), labels)
        tckd, nckd = dkd_terms(student.logits, teacher.logits, targets, p.temperature)
        return {"tckd": ramp * p.alpha * tckd, "nckd": ramp * p.beta * nckd,
                "ce": p.ce_weight * self.cross_entropy(student.logits, labels)}
