import json
import subprocess
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import timm
import torch

from distill import plots, training
from distill.cli import main
from distill.errors import DistillError
from distill.plots import curves_figure, example_indices, shortened
from distill.publish import model_card
from distill.runs import code_version, train_run
from distill.training import Limits, TrainConfig, warmup_cosine

from .conftest import QUICK, REPO

RUN_FILES = ["report.json", "report.md", "weights.safetensors", "curves.png", "confusion.png",
             "examples.png", "checkpoints/best.ckpt", "logs/metrics.csv"]


def test_a_short_training_run_clearly_beats_chance(tmp_path, data_dir):
    config = TrainConfig(epochs=2, batch_size=64)
    limits = Limits(train_size=2048, val_batches=1, test_size=1000)
    report = train_run("teacher", tmp_path / "run", config, "test", data_dir, limits,
                              progress=False)
    assert report["evaluation"]["test"]["top1"] > 0.5  # chance is 0.1
    assert report["training"]["epochs_run"] == 2


def test_distill_teacher_writes_every_output(tmp_path, capsys):
    out = tmp_path / "teacher"
    # No --no-progress: output that is not a terminal gets epoch lines, not a bar's frames.
    main(["teacher", "--out", str(out), "--epochs", "1", "--train-batches", "3",
          "--val-batches", "1", "--test-images", "200"])
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["cost"]["parameters"] > 450_000
    assert set(report["evaluation"]) >= {"test", "augmented_test", "per_class_accuracy",
                                         "most_confused"}
    printed = capsys.readouterr().out
    assert "test top-1" in printed and str(out) in printed.replace("\n", "")
    assert "teacher: epoch 1/1, train loss " in printed and "━" not in printed


def test_a_finished_run_is_not_overwritten_without_asking(tmp_path, capsys):
    out = tmp_path / "teacher"
    out.mkdir()
    (out / "report.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--out", str(out), "--no-progress"])
    assert exit_.value.code == 1
    assert "--overwrite" in capsys.readouterr().out
    assert (out / "report.json").read_text() == "{}"


def test_asking_for_a_missing_accelerator_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--out", str(tmp_path / "t"), "--accelerator", "cuda"])
    assert exit_.value.code == 1
    assert "--accelerator" in capsys.readouterr().out


def test_a_diverging_loss_stops_the_run_naming_the_step(tmp_path, capsys, monkeypatch):
    from distill import training

    monkeypatch.setattr(training, "FINITE_CHECK_EVERY", 1)
    real_losses = training.Classifier.losses

    def loss_that_diverges(self, batch, batch_idx):
        logits, terms = real_losses(self, batch, batch_idx)
        return logits, {k: v * float("nan") if self.global_step == 2 else v
                        for k, v in terms.items()}

    monkeypatch.setattr(training.Classifier, "losses", loss_that_diverges)
    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--out", str(tmp_path / "t"), "--epochs", "1", "--train-batches", "5",
              "--val-batches", "1", "--no-progress"])
    assert exit_.value.code == 1
    assert "nan at step 2" in capsys.readouterr().out


def test_with_ema_the_run_keeps_the_averaged_weights(tmp_path, data_dir):
    import torch
    from safetensors.torch import load_file

    config = TrainConfig(model="convnet_micro", epochs=1, batch_size=64, ema_decay=0.9)
    limits = Limits(train_size=640, val_batches=1, test_size=100)
    train_run("micro", tmp_path / "run", config, "test", data_dir, limits, progress=False)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)
    averaged = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    raw = {k.removeprefix("model."): v for k, v in checkpoint["current_model_state"].items()}
    saved = load_file(tmp_path / "run" / "weights.safetensors")
    name = "features.0.conv.weight"
    assert not torch.equal(averaged[name], raw[name])
    assert torch.equal(saved[name], averaged[name].contiguous())


@pytest.mark.parametrize("warmup", [0.05, 0.1, 0.2, 0.25, 0.5])
def test_the_schedule_works_for_runs_of_any_length(warmup):
    import torch

    for total in range(1, 60):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        schedule = warmup_cosine(optimizer, 0.01, total, warmup)
        rates = []
        for _ in range(total):
            optimizer.step()
            schedule.step()
            rates.append(schedule.get_last_lr()[0])
        assert max(rates) <= 0.01 + 1e-12 and rates[-1] < 0.01


def test_the_progress_bar_counts_epochs_from_one_and_names_the_run():
    bar = training.EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=10)
    assert bar._get_train_description(0).strip() == "Epoch 1/10"
    assert bar._get_train_description(9).strip() == "Epoch 10/10"
    named = training.EpochProgressBar("student-tiny-twin")
    named._trainer = SimpleNamespace(max_epochs=10)
    assert named._get_train_description(0).strip() == "student-tiny-twin: Epoch 1/10"


@pytest.mark.filterwarnings("error")
def test_the_curves_show_the_error_rate_of_every_epoch_on_a_log_axis():
    series = {"train_loss": [(0, 2.0), (1, 0.5), (2, 0.2)], "train_acc": [(0, 0.4), (1, 0.9), (2, 0.99)],
              "val_loss": [(0, 0.9), (1, 0.3), (2, 0.1)], "val_acc": [(0, 0.8), (1, 0.98), (2, 1.0)]}
    figure = curves_figure(series, kept_epoch=1)
    _, errors = figure.axes
    assert errors.get_yscale() == "log"
    train, val, kept = errors.lines
    assert list(kept.get_xdata()) == [2, 2] and kept.get_label() == "kept: epoch 2"
    assert list(train.get_xdata()) == [1, 2, 3]
    assert list(train.get_ydata()) == pytest.approx([0.6, 0.1, 0.01])
    assert list(val.get_ydata()) == pytest.approx([0.2, 0.02, 0.0])  # the perfect epoch is masked
    low, high = errors.get_ylim()
    assert low <= 0.01 and high >= 0.6  # the first epoch is in the frame, not below it
    assert figure.axes[0].get_title() == "Loss (log scale)"
    plt.close(figure)
    plt.close(curves_figure({}))  # a run without logged metrics: empty axes, no warning
    named = curves_figure(series, loss="Distillation loss", train="train (augmented)")
    assert named.axes[0].get_title() == "Distillation loss (log scale)"
    assert [line.get_label() for line in named.axes[1].lines] == ["train (augmented)", "val"]
    plt.close(named)
    # A warm restart draws the level its validation curves had to beat: its starting weights'.
    restarted = curves_figure(series, kept_epoch=1, start={"loss": 0.25, "top1": 0.97})
    for ax, level in zip(restarted.axes, (0.25, 0.03)):
        start = next(line for line in ax.lines if line.get_label() == "val, starting weights")
        assert list(start.get_ydata()) == pytest.approx([level, level])
    plt.close(restarted)


def test_the_training_curves_say_which_images_they_are_of():
    from distill.report import training_images

    assert training_images(None) == "train"
    assert training_images({"degrees": 0.0, "translate": 0.0, "scale": 0.0}) == "train"
    assert training_images({"degrees": 30.0, "translate": 0.2, "scale": 0.2}) == "train (augmented)"
    assert training_images({"degrees": 10.0, "translate": 0.1, "scale": 0.1, "hflip": True,
                            "cutmix": 0.5}) == "train (augmented, CutMix)"


def test_the_examples_take_right_images_from_each_class_in_turn_then_the_mistakes():
    # A folder's test set is in class order: 30 of class 0, 30 of class 1, 30 of class 2.
    labels = torch.arange(3).repeat_interleave(30)
    predicted = labels.clone()
    predicted[[5, 6, 40]] = 2  # three mistakes, two of class 0
    shown = example_indices(predicted, labels, count=8, mistakes=2)
    assert shown[-2:] == [5, 40]
    assert [int(labels[i]) for i in shown[:6]] == [0, 1, 2, 0, 1, 2]
    assert shown[:3] == [0, 30, 60]


def test_a_confusion_matrix_of_many_classes_grows_and_reads_by_colour(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    ten = torch.eye(10, dtype=torch.long) * 900 + 1
    plots.plot_confusion(ten, tmp_path / "ten.png")
    plots.plot_confusion(torch.eye(120, dtype=torch.long) * 50, tmp_path / "many.png",
                         classes=[f"class number {k}" for k in range(120)])
    few, many = figures
    assert len(few.axes[0].texts) == 100 and len(few.axes) == 1  # every count written
    assert not many.axes[0].texts and len(many.axes) == 2  # a colour bar instead
    assert many.get_figheight() > 2 * few.get_figheight()
    names = [t.get_text() for t in many.axes[0].get_yticklabels()]
    assert len(set(names)) == 120 and names[17] == "class number 17"
    assert shortened("class number 17", 11) == "class…er 17" and shortened("coat", 11) == "coat"


def test_a_run_report_names_classes_and_the_augmentation_it_was_scored_with():
    from distill.report import markdown

    figures = {"top1": 0.5, "top2": 0.7, "ece": 0.1}
    classes = [f"species {k}" for k in range(12)]
    report = {
        "name": "teacher", "model": "digitnet", "command": "distill teacher --dataset birds",
        "training": {"device": "cpu", "seconds": 3, "epochs_run": 1, "best_epoch": 0},
        "cost": {"parameters": 1, "bytes": 4, "flops": 10, "latency_ms": 1.0, "throughput": 5.0},
        "classes": classes,
        "evaluation": {"test": figures, "augmented_test": figures, "test_images": 1_200,
                       "augmented_with": "rotations up to 20 degrees",
                       "per_class_accuracy": {str(k): k / 12 for k in range(12)},
                       "most_confused": [{"true": 3, "predicted": 11, "count": 4}]}}
    text = markdown(report)
    assert "(1 epoch, best epoch 1)" in text
    assert ("Scored on 1,200 test images; the augmented copy augments each once at random, with "
            "a fixed seed (rotations up to 20 degrees).") in text
    assert "| species 11 | 91.7 |" in text  # a row a class past ten
    assert "species 3 -> species 11: 4" in text
    del report["evaluation"]["augmented_with"], report["classes"]  # a report from before: MNIST's
    report["evaluation"]["per_class_accuracy"] = {str(k): 1.0 for k in range(10)}
    text = markdown(report)
    assert "rotations up to 30 degrees, shifts up to 20%, zooms up to 20%" in text
    assert "| 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |" in text and "3 -> 11: 4" in text
    assert "mirrored, rotations up to 15 degrees" in markdown({**report, "dataset": "fashion-mnist"})


def test_a_short_trials_narrow_error_range_still_gets_several_labels():
    series = {"train_acc": [(0, 0.4), (1, 0.45)], "val_acc": [(0, 0.57), (1, 0.62)]}
    figure = curves_figure(series, kept_epoch=1)
    figure.canvas.draw()
    _, errors = figure.axes
    labels = [t.get_text() for minor in (False, True)
              for t in errors.yaxis.get_ticklabels(minor=minor) if t.get_text()]
    assert len(labels) >= 2 and "40%" in labels, labels
    plt.close(figure)


def test_a_run_records_its_commit_and_whether_the_code_had_changes(tmp_path):
    assert code_version(tmp_path) == "unknown"  # not a git checkout

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("a = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "first")
    commit = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=tmp_path, text=True,
                            capture_output=True).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked files are not the code\n")
    assert code_version(tmp_path) == commit
    (tmp_path / "code.py").write_text("a = 2\n")
    assert code_version(tmp_path) == f"{commit}-dirty"


def test_the_gpu_script_runs_quickly_anywhere(tmp_path, data_dir, fashion_dir):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--quick",
                           "--batch-size", "128", "--fashion-teacher", "1", "--out", str(tmp_path),
                           "--fashion-recipe",
                           str(REPO / "docs" / "experiments" / "teacher-fashion-mnist-shifts.yaml")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DISTILL_FASHION_MNIST_DIR": str(fashion_dir)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| teacher, eager" in done.stdout and "The cache's speed-up" in done.stdout
    assert "| Fashion-MNIST teacher (teacher-fashion-mnist-shifts), epochs: 1" in done.stdout
    assert (tmp_path / "gpu-teacher-fashion-mnist-shifts-1" / "report.json").is_file()  # kept


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "benchmarks").glob("*.py")))
def test_every_benchmark_imports_what_distill_has(script, monkeypatch):
    # benchmarks/data_path.py imported MNIST_MEAN for months after the datasets moved it.
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as `python benchmarks/X.py` runs
    spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}",
                                                  REPO / "benchmarks" / script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # its main() does not run


def test_early_stopping_waits_for_the_end_of_the_warm_up(tmp_path):
    # 300 epochs warm up for 30: a validation loss flat for 3 of them says nothing yet.
    config = TrainConfig(epochs=300, warmup=0.1, patience=3)
    trainer = training.make_trainer(tmp_path, config, Limits(), accelerator="cpu", progress=False)
    assert trainer.fit_loop.min_epochs == 30 and trainer.fit_loop.max_epochs == 300


def test_lightning_device_notes_are_not_printed():
    """Lightning's start-up notes say nothing a user acts on; on CUDA one of them came from the
    accelerator's own logger ("LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]", seen on an H200)."""
    import logging

    from lightning.pytorch.accelerators import cuda

    from distill.cli import quiet_lightning

    quiet_lightning()
    assert not cuda._log.isEnabledFor(logging.INFO)
    assert not logging.getLogger("lightning.pytorch.utilities.rank_zero").isEnabledFor(logging.INFO)


def test_training_losses_reach_lightning_once_an_epoch_as_means_over_images(tmp_path, data_dir,
                                                                           monkeypatch):
    """self.log costs about a millisecond of host time a call: the training losses are summed on
    the device and logged at each epoch's last batch, as the mean over its images."""
    calls, losses = [], []
    log, losses_of = training.Classifier.log, training.Classifier.losses

    def counted_log(self, name, value, *args, **kwargs):
        if self.trainer.training and name.startswith("train"):
            calls.append((name, self.trainer.is_last_batch))
        return log(self, name, value, *args, **kwargs)

    def recorded_losses(self, batch, batch_idx):
        logits, terms = losses_of(self, batch, batch_idx)
        losses.append((len(batch[1]), terms["ce"].detach().item()))
        return logits, terms

    monkeypatch.setattr(training.Classifier, "log", counted_log)
    monkeypatch.setattr(training.Classifier, "losses", recorded_losses)
    config = TrainConfig(epochs=1, batch_size=64)
    limits = Limits(train_size=300, val_batches=1, test_size=200)  # 4 batches of 64
    report = train_run("teacher", tmp_path / "run", config, "test", data_dir, limits,
                       progress=False)
    assert sorted(calls) == [("train_acc", True), ("train_loss", True)]
    assert report["training"]["epochs_run"] == 1
    assert len(losses) == 4
    mean = sum(n * loss for n, loss in losses) / sum(n for n, _ in losses)
    logged = plots.read_metrics(tmp_path / "run" / "logs" / "metrics.csv")["train_loss"]
    assert logged == [(0, pytest.approx(mean, rel=1e-5))]


def test_init_starts_the_run_from_trained_weights_and_says_so(tmp_path, teacher_run, capsys):
    import hashlib

    from safetensors.torch import load_file

    out = tmp_path / "restart"
    # At a learning rate of 0 the steps move nothing: the run ends with the weights it began from.
    main(["teacher", "--out", str(out), "--init", str(teacher_run), "--lr", "0", *QUICK])
    started, ended = (load_file(p / "weights.safetensors") for p in (teacher_run, out))
    assert started.keys() == ended.keys()
    assert all(torch.equal(started[k], ended[k]) for k in started)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["init"] == str(teacher_run)
    assert report["init_sha256"] == hashlib.sha256(
        (teacher_run / "weights.safetensors").read_bytes()).hexdigest()
    card = " ".join(model_card(report).split())
    assert f"It started from the trained weights of `{teacher_run}`" in card
    assert report["init_sha256"][:16] in card
    # Whether the run beat its starting weights, on its validation images, by the loss its epoch
    # was kept by (the same figure Lightning logged for that epoch).
    scores = report["init_validation"]
    assert scores["start"] == scores["kept"]
    logged = plots.read_metrics(out / "logs" / "metrics.csv")["val_loss"]
    assert logged == [(0, pytest.approx(scores["kept"]["loss"], rel=1e-4))]
    assert f"the starting weights {scores['start']['loss']:.4f}" in card
    assert f"the starting weights {scores['start']['loss']:.4f}" in (out / "report.md").read_text()
    said = " ".join(capsys.readouterr().out.split())
    assert f"against its starting weights' {scores['start']['loss']:.4f}" in said
    assert said.count("no better") == 1


def test_init_from_another_network_or_shape_is_a_clear_error(tmp_path, teacher_run, capsys):
    from distill.runs import start_from

    with pytest.raises(SystemExit) as exit_:
        main(["teacher", "--out", str(tmp_path / "t"), "--init", str(tmp_path / "nothing"),
              *QUICK])
    assert exit_.value.code == 1
    assert "No weights at" in capsys.readouterr().out
    assert not (tmp_path / "t").exists()
    network = timm.create_model("digitnet", num_classes=3)
    with pytest.raises(DistillError, match="differs in shape"):
        start_from(network, TrainConfig(init=str(teacher_run)))
    with pytest.raises(DistillError, match="holds a digitnet, and this run trains a convnet_tiny"):
        start_from(network, TrainConfig(model="convnet_tiny", init=str(teacher_run)))


STEPS_COUNTING_FAULTS = """
import resource, sys, torch
from distill.allocator import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
from distill import nets
torch.set_num_threads(1)
network = nets.digitnet()
optimizer = torch.optim.AdamW(network.parameters())
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    torch.nn.functional.cross_entropy(network(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step(), step(), step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_keep_freed_memory_spares_a_training_step_most_of_its_page_faults():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator only")
    faults = {how: int(subprocess.run([sys.executable, "-c", STEPS_COUNTING_FAULTS, how],
                                      check=True, capture_output=True, text=True).stdout)
              for how in ("default", "kept")}
    # Measured on this project's machine: about 4,000 a step by default, 300 kept.
    assert faults["kept"] < faults["default"] / 4, faults


def test_an_epochs_line_says_what_is_left_and_where_a_long_epochs_time_went():
    from distill.training import EpochTimes

    times = EpochTimes("student-tiny")
    times.seconds = [12.0, 14.0, 241.0]  # the third computed ten epochs of teacher logits
    module = SimpleNamespace(epoch_note=lambda: "226 s of them the teacher's logits for epochs 3-12")
    trainer = SimpleNamespace(callback_metrics={"val_acc": torch.tensor(0.9)}, current_epoch=2,
                              max_epochs=30, lightning_module=module)
    # The median of the last epochs, not their mean, estimates the rest: 27 epochs of 14 s.
    assert times.summary(trainer) == ("student-tiny: epoch 3/30, val top-1 90.00%, 241 s, 226 s of "
                                      "them the teacher's logits for epochs 3-12 (about 6 min to "
                                      "epoch 30)")
    trainer.current_epoch, trainer.lightning_module = 26, SimpleNamespace()  # a teacher: no note
    # Three epochs of 14 s left: not worth an estimate.
    assert times.summary(trainer) == "student-tiny: epoch 27/30, val top-1 90.00%, 241 s"
    trainer.current_epoch = 29
    assert times.summary(trainer) == "student-tiny: epoch 30/30, val top-1 90.00%, 241 s"
