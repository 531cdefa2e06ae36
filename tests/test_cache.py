import re

import pytest
import torch

from distill import cache
from distill.cache import teacher_clean_logits, teacher_logits_table
from distill.data import EVAL_BATCH, load_split, validation_images
from distill.errors import DistillError
from distill.methods.dkd import DKDParams
from distill.methods.function_matching import FunctionMatchingParams
from distill.methods.kd import KDParams
from distill.metrics import predict_logits
from distill.nets import DigitNet
from distill.recipes import Distillation
from distill.runs import train_run
from distill.training import Limits, TrainConfig

LIMITS = Limits(train_size=512, train_batches=4, val_batches=1, test_size=100)


def small_teacher():
    torch.manual_seed(0)
    return DigitNet(dims=(8, 8, 8, 8), depths=(1, 1, 1, 1)).eval()


KD = Distillation("kd", KDParams(4.0, 0.9))


def distill_once(tmp_path, name, teacher, logits, data_dir, validation_logits=None,
                 distillation=KD, **config_args):
    config = TrainConfig(model="convnet_micro", epochs=2, batch_size=64, lr=0.01, **config_args)
    train_run(name, tmp_path / name, config, "test", data_dir, LIMITS, progress=False,
              teacher=teacher, distillation=distillation, teacher_logits=logits,
              validation_logits=validation_logits)
    return torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)


LOGIT_METHODS = [KD, Distillation("dkd", DKDParams(warmup=0.5)),
                 Distillation("function_matching", FunctionMatchingParams(mixup_alpha=0.4))]


@pytest.mark.parametrize("distillation", LOGIT_METHODS, ids=lambda d: d.method)
def test_cached_teacher_logits_train_the_same_student_as_the_online_teacher(tmp_path, data_dir,
                                                                            monkeypatch,
                                                                            distillation):
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=2, batch_size=64)
    method = distillation.build(config.seed)
    table = teacher_logits_table(teacher, config, LIMITS, tmp_path / "cache", data_dir,
                                 progress=False, method=method)
    assert table.shape == (2, 60_000, 10) and table.abs().sum() > 0
    val_images = validation_images(data_dir)[: LIMITS.val_batches * EVAL_BATCH]
    validation = teacher_clean_logits(teacher, val_images, tmp_path / "cache")
    online = distill_once(tmp_path, "online", teacher, None, data_dir, distillation=distillation)
    calls = []
    monkeypatch.setattr(teacher, "forward", lambda x: calls.append(len(x)))
    cached = distill_once(tmp_path, "cached", teacher, table, data_dir, validation,
                          distillation=distillation)
    assert calls == []  # from the cache, a student run never runs the teacher
    for key, value in online["state_dict"].items():
        assert torch.equal(value, cached["state_dict"][key]), key
    online_metrics, cached_metrics = ((tmp_path / name / "logs" / "metrics.csv").read_text()
                                      for name in ("online", "cached"))
    assert "val_loss" in online_metrics and cached_metrics == online_metrics


def test_mixed_up_views_have_a_cache_of_their_own(tmp_path, data_dir):
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=1, batch_size=64)
    plain = teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir, progress=False)
    fm = Distillation("function_matching", FunctionMatchingParams()).build(0)
    mixed = teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir, progress=False,
                                 method=fm)
    assert len(list(tmp_path.glob("teacher-logits-*"))) == 2
    assert not torch.equal(plain, mixed)


def test_the_cache_is_reused_and_keyed_by_the_teacher(tmp_path, data_dir):
    config = TrainConfig(model="convnet_micro", epochs=1, batch_size=64)
    teacher = small_teacher()
    first = teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir, progress=False)
    assert len(list(tmp_path.glob("teacher-logits-*"))) == 1
    assert torch.equal(first, teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir,
                                                   progress=False))
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)
    teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir, progress=False)
    assert len(list(tmp_path.glob("teacher-logits-*"))) == 2


def test_a_longer_recipe_extends_the_cache_with_the_same_logits(tmp_path, data_dir):
    teacher = small_teacher()
    short = TrainConfig(model="convnet_micro", epochs=1, batch_size=64)
    long = TrainConfig(model="convnet_micro", epochs=3, batch_size=64)
    first = teacher_logits_table(teacher, short, LIMITS, tmp_path / "a", data_dir, progress=False)
    extended = teacher_logits_table(teacher, long, LIMITS, tmp_path / "a", data_dir,
                                    progress=False)
    fresh = teacher_logits_table(teacher, long, LIMITS, tmp_path / "b", data_dir, progress=False)
    assert extended.shape == (3, 60_000, 10)
    assert torch.equal(extended[:1], first) and torch.equal(extended, fresh)
    assert torch.equal(teacher_logits_table(teacher, short, LIMITS, tmp_path / "a", data_dir,
                                            progress=False), first)


def test_an_interrupted_pass_keeps_its_finished_epochs(tmp_path, data_dir, monkeypatch):
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=3, batch_size=64)
    fresh = teacher_logits_table(teacher, config, LIMITS, tmp_path / "fresh", data_dir,
                                 progress=False)
    computed = []
    save = cache.save_atomic

    def save_then_stop(path, tensors):
        save(path, tensors)
        computed.append(path.name)
        if len(computed) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cache, "save_atomic", save_then_stop)
    with pytest.raises(DistillError, match="2 of 3 epochs are kept"):
        teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir, progress=False)
    computed.clear()
    resumed = teacher_logits_table(teacher, config, LIMITS, tmp_path, data_dir, progress=False)
    assert computed == ["epoch-0002.safetensors"]  # only the epoch the interruption lost
    assert torch.equal(resumed, fresh)


def test_the_teachers_logits_on_clean_images_are_computed_once(tmp_path, data_dir):
    teacher = small_teacher()
    images = load_split("test", data_dir)[0][:300]
    expected = predict_logits(teacher, images)
    assert torch.equal(teacher_clean_logits(teacher, images, tmp_path), expected)
    [stored] = tmp_path.glob("teacher-clean-*.safetensors")
    teacher_clean_logits(teacher, images[:200], tmp_path)  # other images get their own entry
    weight = next(teacher.parameters())
    kept = weight.detach().clone()
    with torch.no_grad():  # and so does a changed teacher
        weight.add_(1.0)
    teacher_clean_logits(teacher, images, tmp_path)
    assert len(list(tmp_path.glob("teacher-clean-*.safetensors"))) == 3
    with torch.no_grad():
        weight.copy_(kept)
    stored.write_bytes(b"damaged")  # recomputed, not fatal
    assert torch.equal(teacher_clean_logits(teacher, images, tmp_path), expected)


def test_without_augmentation_one_pass_serves_every_epoch(tmp_path, data_dir):
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=3, batch_size=64, augment=None)
    table = teacher_logits_table(teacher, config, LIMITS, tmp_path / "cache", data_dir,
                                 progress=False)
    assert table.shape == (3, 60_000, 10)
    assert torch.equal(table[0], table[2])
    # Every training image is covered, not only the first epoch's limited batches.
    assert (table[0].abs().sum(-1) > 0).sum() == LIMITS.train_size
    online = distill_once(tmp_path, "online", teacher, None, data_dir, augment=None)
    cached = distill_once(tmp_path, "cached", teacher, table[:2], data_dir, augment=None)
    for key, value in online["state_dict"].items():
        assert torch.equal(value, cached["state_dict"][key]), key


def test_batch_augmentation_is_refused_for_a_student(tmp_path, data_dir):
    config = TrainConfig(model="convnet_micro", epochs=1, batch_size=64, views=2)
    with pytest.raises(DistillError, match="views"):
        train_run("student", tmp_path / "student", config, "test", data_dir, LIMITS,
                  progress=False, teacher=small_teacher(),
                  distillation=KD)
    assert not (tmp_path / "student").exists()


def test_mnist_cache_keys_are_those_of_runs_before_datasets_flips_erasing_and_cutmix(tmp_path):
    """A cache computed before datasets, flips, erasing and CutMix existed still serves MNIST runs:
    the key is the one the earlier formula gives."""
    import json
    from dataclasses import asdict

    from distill.cache import CACHE_FORMAT, cache_key, weights_digest

    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=2, batch_size=64)
    earlier = weights_digest(teacher)
    augment = {k: v for k, v in asdict(config.augment).items() if k not in ("hflip", "erasing",
                                                                             "cutmix")}
    earlier.update(json.dumps({"format": CACHE_FORMAT, "augment": augment, "seed": config.seed,
                               "batch_size": config.batch_size, "train_size": LIMITS.train_size,
                               "train_batches": LIMITS.train_batches}, sort_keys=True).encode())
    assert cache_key(teacher, config, LIMITS) == earlier.hexdigest()[:16]


def test_a_folders_cache_key_changes_with_its_files(tmp_path, data_dir, monkeypatch):
    """Teacher logits are rows by image position: after an image of the folder is edited (or one
    is added), the rows of the earlier cache belong to other pictures and must not serve."""
    import numpy as np
    from PIL import Image

    from distill.cache import cache_key
    from distill.datasets.folder import check_layout, decoded

    from .test_datasets import write_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "digits", data_dir, per_class=4).resolve()
    (root / "digit-0" / "broken.png").unlink()
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", dataset=f"folder:{root}", batch_size=4)
    before = cache_key(teacher, config, LIMITS)
    assert cache_key(teacher, config, LIMITS) == before
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "digit-7" / "0.png")
    decoded.cache_clear(), check_layout.cache_clear()  # as the next command would
    assert cache_key(teacher, config, LIMITS) != before


def test_a_run_that_may_stop_early_computes_later_teacher_epochs_when_it_reaches_them(
        tmp_path, data_dir, capsys):
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=5, batch_size=64)
    eager = teacher_logits_table(teacher, config, LIMITS, tmp_path / "eager", data_dir,
                                 progress=False)
    capsys.readouterr()
    lazy = teacher_logits_table(teacher, config, LIMITS, tmp_path / "lazy", data_dir,
                                progress=False, ahead=2)
    announced = capsys.readouterr().out
    assert "Teacher logits for epochs 1-2 of 5: computed once" in announced
    assert "Teacher logits for epochs 3-5 of 5: computed when training reaches them" in announced
    folder = next((tmp_path / "lazy").glob("teacher-logits-*"))
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0000.safetensors",
                                                        "epoch-0001.safetensors"]
    assert torch.equal(lazy[1], eager[1])
    state = torch.get_rng_state()
    assert torch.equal(lazy[3], eager[3])  # epochs 3 and 4 computed now, as the first pass would
    assert torch.equal(torch.get_rng_state(), state)  # the student's random draws are untouched
    # The epoch's line says where its minutes went, once.
    assert re.fullmatch(r"\d+ s of them the teacher's logits for epochs 4-5", lazy.computed_note())
    assert lazy.computed_note() is None
    assert len(list(folder.iterdir())) == 4 and torch.equal(lazy[4], eager[4])
    assert "Teacher logits" not in capsys.readouterr().out  # said once, before training
    # A run that reaches every epoch gets exactly the eager table.
    assert torch.equal(torch.stack([lazy[e] for e in range(5)]), eager)


def test_the_teacher_pass_runs_where_the_student_trains(monkeypatch):
    from distill.pipeline import training_device

    assert training_device("auto") == training_device("cpu") == "cpu"  # this machine: no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device("auto") == training_device("cuda") == "cuda"
    assert training_device("cpu") == "cpu"
