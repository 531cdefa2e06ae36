import pytest
import torch

from distill import cache
from distill.cache import teacher_logits_table, teacher_test_predictions
from distill.data import load_split
from distill.errors import DistillError
from distill.nets import DigitNet
from distill.recipes import Distillation
from distill.report import predict_logits
from distill.runs import train_run
from distill.training import Limits, TrainConfig

LIMITS = Limits(train_size=512, train_batches=4, val_batches=1, test_size=100)


def small_teacher():
    torch.manual_seed(0)
    return DigitNet(dims=(8, 8, 8, 8), depths=(1, 1, 1, 1)).eval()


def distill_once(tmp_path, name, teacher, logits, data_dir, **config_args):
    config = TrainConfig(model="convnet_micro", epochs=2, batch_size=64, lr=0.01, **config_args)
    train_run(name, tmp_path / name, config, "test", data_dir, LIMITS, progress=False,
              teacher=teacher, distillation=Distillation(4.0, 0.9), teacher_logits=logits)
    return torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)


def test_cached_teacher_logits_train_the_same_student_as_the_online_teacher(tmp_path, data_dir):
    teacher = small_teacher()
    config = TrainConfig(model="convnet_micro", epochs=2, batch_size=64)
    table = teacher_logits_table(teacher, config, LIMITS, tmp_path / "cache", data_dir,
                                 progress=False)
    assert table.shape == (2, 60_000, 10) and table.abs().sum() > 0
    online = distill_once(tmp_path, "online", teacher, None, data_dir)
    cached = distill_once(tmp_path, "cached", teacher, table, data_dir)
    for key, value in online["state_dict"].items():
        assert torch.equal(value, cached["state_dict"][key]), key


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


def test_the_teachers_test_predictions_are_computed_once(tmp_path, data_dir):
    teacher = small_teacher()
    images = load_split("test", data_dir)[0][:300]
    expected = predict_logits(teacher, images).argmax(-1)
    assert torch.equal(teacher_test_predictions(teacher, images, tmp_path), expected)
    [stored] = tmp_path.glob("teacher-test-*.safetensors")
    with torch.no_grad():  # a changed teacher gets its own entry, the stored one is read back
        next(teacher.parameters()).add_(1.0)
    teacher_test_predictions(teacher, images, tmp_path)
    assert len(list(tmp_path.glob("teacher-test-*.safetensors"))) == 2
    with torch.no_grad():
        next(teacher.parameters()).sub_(1.0)
    stored.write_bytes(b"damaged")
    assert torch.equal(teacher_test_predictions(teacher, images, tmp_path), expected)


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
                  progress=False, teacher=small_teacher(), distillation=Distillation(4.0, 0.9))
    assert not (tmp_path / "student").exists()
