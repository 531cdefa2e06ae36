"""The Lightning module of a distilled student: a student, its frozen teachers and a method.

It does not know which method it runs: the method (`distill.methods`) says what input both
networks see, what it needs from the teachers, and returns its loss terms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from distill.data import EVAL_BATCH
from distill.errors import DistillError
from distill.methods import Method, Outputs
from distill.training import Classifier

if TYPE_CHECKING:
    from distill.datasets import Dataset

# Lightning warns about modules left in eval mode when training starts: the frozen teacher is,
# on purpose (see `Distiller.train`).
warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode", UserWarning)


class Ensemble(nn.Module):
    """Several teachers answering as one: the mean of their logits (e.g. teachers of several
    seeds). One teacher is used as it is, not wrapped, so its cache keys stay as they were."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(teachers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([member(x).float() for member in self.members]).mean(0)


class Renormalized(nn.Module):
    """A teacher of a folder whose images have changed since it was trained: the student's
    batches are normalized with the folder's mean and spread as they are now, and the teacher
    reads them as its own training images were normalized (an affine map per channel)."""

    def __init__(self, teacher: nn.Module, now: Dataset, taught: Dataset) -> None:
        super().__init__()
        self.teacher = teacher
        shape = (1, len(now.mean), 1, 1)
        now_mean, now_std, taught_mean, taught_std = (torch.tensor(v).view(shape) for v in (
            now.mean, now.std, taught.mean, taught.std))
        self.register_buffer("scale", now_std / taught_std)
        self.register_buffer("shift", (now_mean - taught_mean) / taught_std)

    @classmethod
    def between(cls, teacher: nn.Module, now: Dataset, taught: Dataset) -> nn.Module:
        """The teacher itself when the normalizations agree (its cache keys stay as they were)."""
        same = (now.mean, now.std) == (taught.mean, taught.std)
        return teacher if same else cls(teacher, now, taught)

    def as_taught(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher(self.as_taught(x))

    @property
    def num_classes(self) -> int | None:
        return getattr(self.teacher, "num_classes", None)

    @property
    def forward_features(self) -> Callable[[Tensor], Tensor]:
        features = self.teacher.forward_features  # AttributeError: a teacher without features
        return lambda x: features(self.as_taught(x))

    @property
    def forward_head(self) -> Callable[[Tensor], Tensor]:
        return self.teacher.forward_head


def has_features(network: nn.Module | type) -> bool:
    return callable(getattr(network, "forward_features", None))


def check_features(method: Method, student: nn.Module | type, teacher: nn.Module) -> None:
    """A method that reads feature maps needs networks that have them (a CNN, one teacher)."""
    if not method.needs_features:
        return
    for network, role in ((student, "student"), (teacher, "teacher")):
        if not has_features(network):
            name = getattr(network, "__name__", type(network).__name__)
            choice = ("a CNN student" if role == "student"
                      else "a single teacher with feature maps (DigitNet or a CNN)")
            raise DistillError(f"Method {method.name} needs the {role}'s feature maps, and "
                               f"{name} has none: choose {choice}, or a logit method.")


class Distiller(Classifier):
    """Trains a student with a distillation method; the teacher is frozen and always in eval mode.

    teacher: the trained network (or `Ensemble`) whose outputs the student learns from.
    method: the distillation method (`distill.methods`), with its parameters.
    teacher_logits: (epochs, 60000, classes), the teacher's logits for every training view
        (`cache.teacher_logits_table`), or a call that returns them once training starts; None
        runs the teacher on every batch instead.
    validation_logits: the teacher's logits for the validation images, in order
        (`cache.teacher_clean_logits`); None runs the teacher at the first validation.
    input_shape: of one image, (channels, height, width): the dataset's.
    The remaining arguments are those of `Classifier`.
    """

    objective = "distillation loss"

    def __init__(self, teacher: nn.Module, model: str, method: Method,
                 teacher_logits: Tensor | None = None, validation_logits: Tensor | None = None,
                 input_shape: tuple[int, int, int] = (1, 28, 28), **classifier_args) -> None:
        super().__init__(model, **classifier_args)
        self.teacher = teacher.eval().requires_grad_(False)
        self.method = method
        method.partial_labels = classifier_args.get("labeled_fraction", 1.0) < 1
        check_features(method, self.model, teacher)
        if method.needs_features:
            was_training = self.model.training
            # A sample of the dataset's images sizes the method's layers (a FitNets adapter)
            # from the feature maps.
            method.setup(self.model.eval(), teacher, torch.zeros(2, *input_shape))
            self.model.train(was_training)
        self.cached_logits = teacher_logits  # or a call that computes them (`setup`)
        # The validation images are not augmented, so the teacher's answers on each validation
        # batch are computed once, at the first validation if not given, and kept for the run.
        self.validation_teacher_logits: dict[int, Tensor] = (
            {} if validation_logits is None
            else dict(enumerate(validation_logits.split(EVAL_BATCH))))

    def setup(self, stage: str) -> None:
        # Under DDP the teacher's logits are computed here, once every process runs, so that
        # they share the work (`cache.teacher_logits_table`).
        if callable(self.cached_logits):
            self.cached_logits = self.cached_logits()

    def epoch_note(self) -> str | None:
        """For the epoch's line: the teacher's logits computed during it, if any."""
        note = getattr(self.cached_logits, "computed_note", None)
        return note() if note else None

    def train(self, mode: bool = True) -> Distiller:
        # Lightning switches the whole module to train mode each epoch; the teacher must stay in
        # eval mode (no dropout, no stochastic depth, fixed norm statistics).
        super().train(mode)
        self.teacher.eval()
        return self

    def student_outputs(self, x: Tensor) -> Outputs:
        if self.method.needs_features:
            features = self.model.forward_features(x)
            return Outputs(self.model.forward_head(features), features)
        return Outputs(self(x))

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor, positions: Tensor | None = None,
                        epoch: int | None = None) -> Outputs:
        if self.method.needs_features:
            features = self.teacher.forward_features(x)
            return Outputs(self.teacher.forward_head(features).float(), features)
        if self.cached_logits is not None and positions is not None:
            return Outputs(self.cached_logits[epoch].to(x.device)[positions])
        return Outputs(self.teacher(x).float())

    def losses(self, batch: tuple, batch_idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        x, labels, positions, epoch = batch
        x = self.method.view(x, positions, epoch)
        student = self.student_outputs(x)
        teacher = self.teacher_outputs(x, positions, epoch)
        trainer = self._trainer  # None outside a Trainer (tests, scripts)
        progress = self.current_epoch + (
            batch_idx / max(1, trainer.num_training_batches) if trainer is not None else 0.0)
        return student.logits, self.method.terms(student, teacher, labels, progress)

    def validation_losses(self, x: Tensor, labels: Tensor, batch_idx: int
                          ) -> tuple[Tensor, dict[str, Tensor]]:
        # The student is selected and stopped early on the objective it is trained on: scored on
        # cross-entropy alone, a distilled student (less confident than one trained on labels)
        # looks worse while its accuracy still rises.
        student = self.student_outputs(x)
        if self.method.needs_features:
            teacher = self.teacher_outputs(x)
        else:
            if batch_idx not in self.validation_teacher_logits:
                self.validation_teacher_logits[batch_idx] = self.teacher_outputs(x).logits
            teacher = Outputs(self.validation_teacher_logits[batch_idx].to(x.device))
        return student.logits, self.method.terms(student, teacher, labels, None)

    def state_dict(self, *args, **kwargs):
        # Checkpoints hold the student (and the method's adapter) only: the teacher is an input,
        # saved in its own run.
        state = super().state_dict(*args, **kwargs)
        return type(state)((k, v) for k, v in state.items() if not k.startswith("teacher."))

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        teacher = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
        return super().load_state_dict({**state_dict, **teacher}, strict=strict, **kwargs)
