"""What every distillation method is: parameters from the recipe, what it needs from the
teachers, and loss terms.

A method is an `nn.Module`, so any trainable part it owns (an adapter) is in the Lightning
module's parameters and the optimizer sees it. The Lightning module (`distill.distillation`)
composes a student, its teachers and a method, and does not know which method it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from distill.transfer import labeled_cross_entropy


@dataclass
class Outputs:
    """A network's answer to a batch: logits, and its last feature map where a method needs it."""

    logits: Tensor
    features: Tensor | None = None


# (parameter, check, what it must be): checked when a recipe is read.
Range = tuple[str, Callable[[Any], bool], str]


class Method(nn.Module):
    """Base of the methods. A subclass sets:

    Params: a frozen dataclass of its recipe parameters, with defaults.
    ranges: the parameters' valid values.
    needs_features: the method reads feature maps, so the teacher runs on every batch (no cache).
    uses_labels: False when the student never sees a label (its twin still does).
    and implements `terms`.
    """

    name: ClassVar[str]
    Params: ClassVar[type]
    ranges: ClassVar[list[Range]] = []
    needs_features: ClassVar[bool] = False
    uses_labels: ClassVar[bool] = True

    def __init__(self, params: Any, seed: int = 0) -> None:
        super().__init__()
        self.params, self.seed = params, seed
        # Set by the Lightning module when some images are UNLABELED (`distill.transfer`).
        self.partial_labels = False

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The hard-label loss, over the labeled images only where some have none."""
        return (labeled_cross_entropy if self.partial_labels else F.cross_entropy)(logits, labels)

    def view(self, x: Tensor, positions: Tensor, epoch: int) -> Tensor:
        """The input both student and teacher see for a training batch; by default the batch.
        It must be a pure function of (seed, epoch, positions), so cached teacher logits fit."""
        return x

    def view_key(self) -> dict | None:
        """What makes `view` differ from the plain batch, for the teacher-logits cache's key."""
        return None

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor) -> None:
        """Build what the method owns (an adapter) once the networks are known; `sample` is a
        batch of inputs to read feature shapes from."""

    def terms(self, student: Outputs, teacher: Outputs, labels: Tensor,
              progress: float | None) -> dict[str, Tensor]:
        """The loss terms, summed for training and logged one by one (`loss/NAME`).

        progress: epochs done, fractional, for a method with a warm-up; None in validation, where
        every term has its full weight.
        """
        raise NotImplementedError
