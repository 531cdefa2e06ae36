"""The method registry: each method's loss, its recipe, and a distillation run end to end."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from distill.cli import main
from distill.methods import METHODS, Outputs
from distill.methods.dkd import DKD, DKDParams, dkd_terms
from distill.methods.function_matching import FunctionMatching, FunctionMatchingParams
from distill.methods.kd import soft_kl

from .conftest import QUICK

STUDENT = torch.tensor([[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]])
TEACHER = torch.tensor([[3.0, 0.5, 0.0], [0.0, 1.0, 2.0]])
LABELS = torch.tensor([0, 2])


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_dkd_matches_a_hand_computation_of_tckd_and_nckd():
    t = 2.0
    tckd = nckd = 0.0
    for s_row, t_row, y in zip(STUDENT.tolist(), TEACHER.tolist(), LABELS.tolist()):
        ps, pt = softmax(s_row, t), softmax(t_row, t)
        tckd += kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        others = [i for i in range(3) if i != y]
        nckd += kl(softmax([t_row[i] for i in others], t), softmax([s_row[i] for i in others], t))
    got = dkd_terms(STUDENT, TEACHER, LABELS, t)
    assert got[0].item() == pytest.approx(tckd / 2 * t * t, rel=1e-5)
    assert got[1].item() == pytest.approx(nckd / 2 * t * t, rel=1e-5)


def test_tckd_plus_weighted_nckd_is_kd_when_beta_is_one_minus_the_teachers_target_share():
    # Zhao et al.'s decomposition: KD = TCKD + (1 - p_t) NCKD, per sample.
    t = 1.0
    s, te, y = STUDENT[:1], TEACHER[:1], LABELS[:1]
    tckd, nckd = dkd_terms(s, te, y, t)
    p_target = F.softmax(te / t, -1)[0, y].item()
    assert (tckd + (1 - p_target) * nckd).item() == pytest.approx(soft_kl(s, te, t).item(),
                                                                   rel=1e-5)


def test_dkd_warms_up_linearly_and_validates_at_full_weight():
    method = DKD(DKDParams(warmup=2.0))
    out = [method.terms(Outputs(STUDENT), Outputs(TEACHER), LABELS, progress)["nckd"]
           for progress in (0.5, 2.0, None)]
    assert out[0].item() == pytest.approx(out[1].item() / 4)
    assert out[2].item() == pytest.approx(out[1].item())


def test_function_matching_mixes_the_same_way_for_the_same_seed_epoch_and_images():
    x = torch.randn(6, 1, 28, 28)
    positions = torch.tensor([5, 9, 100, 7, 3, 40])
    method = FunctionMatching(FunctionMatchingParams(mixup_alpha=1.0), seed=3)
    a = method.view(x, positions, epoch=2)
    b = FunctionMatching(FunctionMatchingParams(mixup_alpha=1.0), seed=3).view(x, positions, 2)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(a, method.view(x, positions, epoch=3))
    terms = method.terms(Outputs(STUDENT), Outputs(TEACHER), LABELS, 0.0)
    assert list(terms) == ["kd"]  # no label term


def write_recipe(tmp_path, name, base, distillation):
    text = (f"network: {base}\ndistillation: {distillation}\noptimizer: {{lr: 0.01}}\n"
            "schedule: {epochs: 1}\naugmentation: {degrees: 7.5, translate: 0.05, scale: 0.05}\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name, distillation, terms", [
    ("dkd", "{method: dkd}", ["loss/tckd", "loss/nckd", "loss/ce"]),
    ("fm", "{method: function_matching}", []),
    ("fitnet", "{method: fitnet}", ["loss/kd", "loss/ce", "loss/hint"]),
])
def test_every_method_distills_end_to_end(teacher_run, tmp_path, capsys, name, distillation,
                                          terms):
    recipe = write_recipe(tmp_path, name, "convnet_tiny", distillation)
    runs = tmp_path / "runs"
    main(["student", "--recipe", recipe, "--teacher", str(teacher_run), "--runs", str(runs),
          "--no-twin", *QUICK])
    report = json.loads((runs / f"student-{name}" / "report.json").read_text())
    assert report["distillation"]["method"] == report["distillation"]["method"] in METHODS
    header = (runs / f"student-{name}" / "logs" / "metrics.csv").read_text().split("\n")[0]
    assert all(term in header for term in terms)
    if name == "fitnet":
        assert "teacher runs on every batch" in capsys.readouterr().out
        state = torch.load(runs / f"student-{name}" / "checkpoints" / "last.ckpt",
                           weights_only=True)["state_dict"]
        assert "method.adapter.weight" in state  # the adapter was trained with the student


def test_recipes_of_one_network_share_its_twin(teacher_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    kd = write_recipe(tmp_path, "a", "convnet_tiny", "{method: kd}")
    dkd = write_recipe(tmp_path, "b", "convnet_tiny", "{method: dkd}")
    main(["student", "--recipe", kd, "--recipe", dkd, "--teacher", str(teacher_run), "--runs",
          str(runs), *QUICK])
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == [
        "student-a", "student-a-twin", "student-b"]
    second = json.loads((runs / "student-b" / "report.json").read_text())
    assert second["twin"] == str(runs / "student-a-twin")
    assert second["gain_over_twin"] is not None
    # Three run folders: the last line counts students, not runs, and names the twins.
    out = " ".join(capsys.readouterr().out.split())
    assert "Both students and their twins side by side" in out


def test_several_teachers_distill_from_the_mean_of_their_logits(teacher_run, tmp_path):
    runs = tmp_path / "runs"
    recipe = write_recipe(tmp_path, "ens", "convnet_tiny", "{method: kd}")
    main(["student", "--recipe", recipe, "--teacher", str(teacher_run), "--teacher",
          str(teacher_run / "weights.safetensors"), "--runs", str(runs), "--no-twin", *QUICK])
    report = json.loads((runs / "student-ens" / "report.json").read_text())
    assert report["teacher"] == f"{teacher_run}, {teacher_run / 'weights.safetensors'}"


def test_seeds_each_get_a_folder(teacher_run, tmp_path):
    runs = tmp_path / "runs"
    recipe = write_recipe(tmp_path, "s", "convnet_tiny", "{method: kd}")
    main(["student", "--recipe", recipe, "--teacher", str(teacher_run), "--runs", str(runs),
          "--seeds", "3-4", "--no-twin", *QUICK])
    for seed in (3, 4):
        report = json.loads((runs / f"seed{seed}" / "student-s" / "report.json").read_text())
        assert report["training"]["seed"] == seed


@pytest.mark.parametrize("args, message", [
    (["--seeds", "x"], "is not a list of seeds"),
    (["--seeds", "0-1", "--seed", "2"], "not both"),
])
def test_bad_seed_lists_are_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--runs", str(tmp_path / "runs"), *args])
    assert exit_.value.code == 1 and message in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_a_feature_method_on_a_network_without_features_is_one_line(teacher_run, tmp_path,
                                                                    capsys):
    recipe = write_recipe(tmp_path, "f", "mlp_800", "{method: fitnet}")
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", recipe, "--teacher", str(teacher_run), "--runs",
              str(tmp_path / "runs"), *QUICK])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 1 and "needs the student's feature maps" in out
    assert not (tmp_path / "runs" / "student-f").exists()


def test_self_distillation_is_a_recipe(teacher_run, tmp_path):
    runs = tmp_path / "runs"
    main(["student", "--recipe", "self", "--teacher", str(teacher_run), "--teacher",
          str(teacher_run), "--runs", str(runs), "--no-twin", *QUICK])
    report = json.loads((runs / "student-self" / "report.json").read_text())
    assert report["model"] == "digitnet" and report["kind"] == "student"


def test_a_twin_recorded_before_datasets_and_flips_is_still_found(tmp_path):
    from distill.pipeline import find_twin
    from distill.recipes import load_recipe
    from distill.training import describe

    config = describe(load_recipe("tiny").train_config())
    old = {k: v for k, v in config.items() if k not in ("dataset", "image_size")}
    old["augment"] = {k: v for k, v in old["augment"].items() if k not in ("hflip", "erasing")}
    (tmp_path / "student-tiny-twin").mkdir()
    (tmp_path / "student-tiny-twin" / "report.json").write_text(json.dumps(
        {"kind": "twin", "config": old, "evaluation": {"test_images": 10_000}}))
    assert find_twin(tmp_path, config, 10_000)[0] == tmp_path / "student-tiny-twin"
