"""Knowledge distillation: a student learns from a frozen teacher's softened outputs."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.data import EVAL_BATCH
from distill.training import Classifier

# Lightning warns about modules left in eval mode when training starts: the frozen teacher is,
# on purpose (see `Distiller.train`).
warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode", UserWarning)


def distillation_loss(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float,
                      alpha: float) -> Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y).

    T^2 keeps the soft loss's gradients on the scale of the hard loss's (Hinton et al., 2015).
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                    F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature**2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)


class Distiller(Classifier):
    """Trains a student on the distillation loss; the teacher is frozen and always in eval mode.

    teacher: the trained network whose outputs the student learns from.
    temperature, alpha: see `distillation_loss`.
    teacher_logits: (epochs, 60000, classes), the teacher's logits for every augmented training
        view (`cache.teacher_logits_table`); None runs the teacher on every batch instead.
    validation_logits: the teacher's logits for the validation images, in order
        (`cache.teacher_clean_logits`); None runs the teacher at the first validation.
    The remaining arguments are those of `Classifier`.
    """

    objective = "distillation loss"

    def __init__(self, teacher: nn.Module, model: str, temperature: float = 4.0,
                 alpha: float = 0.9, teacher_logits: Tensor | None = None,
                 validation_logits: Tensor | None = None, **classifier_args) -> None:
        super().__init__(model, **classifier_args)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha
        self.cached_logits = teacher_logits
        # The validation images are not augmented, so the teacher's answers on each validation
        # batch are computed once, at the first validation if not given, and kept for the run.
        self.validation_teacher_logits: dict[int, Tensor] = (
            {} if validation_logits is None
            else dict(enumerate(validation_logits.split(EVAL_BATCH))))

    def train(self, mode: bool = True) -> Distiller:
        # Lightning switches the whole module to train mode each epoch; the teacher must stay in
        # eval mode (no dropout, no stochastic depth, fixed norm statistics).
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, batch: tuple) -> Tensor:
        x, _, positions, epoch = batch
        if self.cached_logits is not None:
            return self.cached_logits[epoch].to(x.device)[positions]
        with torch.no_grad():
            return self.teacher(x).float()

    def loss(self, logits: Tensor, labels: Tensor, batch: tuple) -> Tensor:
        return distillation_loss(logits, self.teacher_logits(batch), labels, self.temperature,
                                 self.alpha)

    def validation_loss(self, x: Tensor, logits: Tensor, labels: Tensor, batch_idx: int) -> Tensor:
        # The student is selected and stopped early on the objective it is trained on. Scored on
        # cross-entropy alone, a distilled student, less confident than one trained on labels,
        # looks worse while its accuracy still rises: with seed 1, tiny stopped at epoch 9 of 10
        # and kept epoch 6, and micro kept epoch 69 of 100, both below their twins.
        if batch_idx not in self.validation_teacher_logits:
            with torch.no_grad():
                self.validation_teacher_logits[batch_idx] = self.teacher(x).float()
        teacher = self.validation_teacher_logits[batch_idx].to(x.device)
        return distillation_loss(logits, teacher, labels, self.temperature, self.alpha)

    def state_dict(self, *args, **kwargs):
        # Checkpoints hold the student only: the teacher is an input, saved in its own run.
        state = super().state_dict(*args, **kwargs)
        return type(state)((k, v) for k, v in state.items() if not k.startswith("teacher."))

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        teacher = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
        return super().load_state_dict({**state_dict, **teacher}, strict=strict, **kwargs)
