import math

import pytest
import torch
import torch.nn.functional as F

from distill.distillation import Distiller
from distill.methods.kd import KD, KDParams
from distill.nets import DigitNet

STUDENT = torch.tensor([[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]])
TEACHER = torch.tensor([[3.0, 0.5, 0.0], [0.0, 1.0, 2.0]])
LABELS = torch.tensor([0, 2])


def distillation_loss(student, teacher, labels, temperature, alpha):
    """The kd method's loss: the sum of its terms."""
    from distill.methods import Outputs

    terms = KD(KDParams(temperature, alpha)).terms(Outputs(student), Outputs(teacher), labels, 0.0)
    return sum(terms.values())


def softmax(row, t):
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_loss_matches_a_hand_computation_on_fixed_logits():
    t, alpha = 2.0, 0.7
    kl = 0.0
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
        p, q = softmax(t_row, t), softmax(s_row, t)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    kl /= 2  # batch mean
    ce = -sum(math.log(softmax(row, 1.0)[y]) for row, y in zip(STUDENT.tolist(), LABELS.tolist())) / 2
    expected = alpha * t * t * kl + (1 - alpha) * ce
    assert distillation_loss(STUDENT, TEACHER, LABELS, t, alpha).item() == pytest.approx(expected,
                                                                                          rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy():
    loss = distillation_loss(STUDENT, TEACHER, LABELS, temperature=4.0, alpha=0.0)
    assert torch.allclose(loss, F.cross_entropy(STUDENT, LABELS))


def test_the_soft_loss_vanishes_when_student_equals_teacher():
    assert distillation_loss(TEACHER, TEACHER, LABELS, 3.0, 1.0).abs().item() < 1e-6


def make_distiller():
    teacher = DigitNet(dims=(8, 8, 8, 8), depths=(1, 1, 1, 1))
    return Distiller(teacher, "convnet_micro", KD(KDParams(temperature=4.0, alpha=0.9)))


def test_gradients_reach_only_the_student():
    module = make_distiller()
    module.train()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    _, terms = module.losses((x, y, torch.arange(4), 0), batch_idx=0)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.model.parameters())


def test_the_teacher_stays_in_eval_mode_when_the_module_trains():
    module = make_distiller()
    module.train()
    assert module.model.training
    assert not any(m.training for m in module.teacher.modules())


def test_checkpoints_hold_the_student_only_and_load_back():
    module = make_distiller()
    state = module.state_dict()
    assert state and not any(k.startswith("teacher.") for k in state)
    make_distiller().load_state_dict(state)


def test_a_student_is_validated_on_its_distillation_objective():
    module = make_distiller().eval()
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        logits = module(x)
        expected = distillation_loss(logits, module.teacher(x), y, 4.0, 0.9)
        _, terms = module.validation_losses(x, y, batch_idx=0)
        assert torch.allclose(sum(terms.values()), expected)
        # The teacher's answers on a validation batch are kept: the same batch index reuses them.
        module.model.forward = lambda _: logits
        _, terms = module.validation_losses(torch.zeros_like(x), y, 0)
        assert torch.allclose(sum(terms.values()), expected)
        assert not torch.allclose(expected, F.cross_entropy(logits, y))
