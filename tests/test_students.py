import hashlib
import itertools
import json
import shutil

import pytest
import timm
import torch

from distill.cli import main
from distill.export import load_model
from distill.nets import parameter_count
from distill.pipeline import find_twin, load_teacher
from distill.recipes import load_recipe
from distill.report import load_report
from distill.runs import train_run
from distill.training import Limits, describe

from .conftest import QUICK
from .test_training import RUN_FILES


def test_distill_student_writes_the_student_and_its_twin(teacher_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    main(["student", "--recipe", "tiny", "--teacher", str(teacher_run), "--runs", str(runs), *QUICK])
    for run in ("student-tiny", "student-tiny-twin"):
        for name in RUN_FILES:
            assert (runs / run / name).is_file(), f"{run}/{name}"
    student = json.loads((runs / "student-tiny" / "report.json").read_text())
    twin = json.loads((runs / "student-tiny-twin" / "report.json").read_text())
    assert student["kind"] == "student" and twin["kind"] == "twin"
    assert student["distillation"] == {"method": "kd", "temperature": 4.0, "alpha": 0.9}
    assert 0 <= student["evaluation"]["teacher_agreement"] <= 1
    gain = student["evaluation"]["test"]["top1"] - twin["evaluation"]["test"]["top1"]
    assert student["gain_over_twin"] == pytest.approx(gain)
    out = capsys.readouterr().out
    assert "Student against its twin: " in out
    # Without progress bars, a log still says what the run is doing: the teacher's pass, each epoch.
    assert "Teacher logits for epoch 1 of 1: computed once" in out
    assert "student-tiny: epoch 1/1, train distillation loss " in out
    assert "student-tiny-twin: epoch 1/1, train loss " in out
    # Each run's summary comes as soon as it is done, not after the twin's training.
    assert out.index("student-tiny (convnet_tiny") < out.index("student-tiny-twin: epoch 1/1")

    # Distilled again without retraining the twin: the gain is measured against the existing one.
    main(["student", "--recipe", "tiny", "--teacher", str(teacher_run), "--runs", str(runs),
          "--no-twin", "--overwrite", *QUICK])
    again = json.loads((runs / "student-tiny" / "report.json").read_text())
    assert again["gain_over_twin"] == pytest.approx(again["evaluation"]["test"]["top1"]
                                                    - twin["evaluation"]["test"]["top1"])


def test_a_recipe_changes_its_networks_shape_for_the_student_and_its_twin(teacher_run, tmp_path):
    recipe = tmp_path / "narrow.yaml"
    recipe.write_text("network: convnet_tiny\nnetwork_options: {channels: [6, 12, 12]}\n")
    runs = tmp_path / "runs"
    main(["student", "--recipe", str(recipe), "--teacher", str(teacher_run), "--runs", str(runs),
          *QUICK])
    narrow = timm.create_model("convnet_tiny", channels=(6, 12, 12))
    for run in ("student-narrow", "student-narrow-twin"):
        report = json.loads((runs / run / "report.json").read_text())
        assert report["cost"]["parameters"] == parameter_count(narrow) < 9_042
        model, _ = load_model(runs / run / "weights.safetensors")  # rebuilt from its own file
        assert parameter_count(model) == parameter_count(narrow)
    # The plain network's twin is not this one: a tiny student trains its own.
    assert find_twin(runs, describe(load_recipe("tiny").train_config()), 0) is None


def test_resume_keeps_a_finished_student_and_trains_its_twin(teacher_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["student", "--recipe", "micro", "--teacher", str(teacher_run), "--runs", str(runs),
            *QUICK]
    main([*args, "--no-twin"])  # as if interrupted before the twin began
    weights = (runs / "student-micro" / "weights.safetensors").read_bytes()
    capsys.readouterr()
    main([*args, "--resume"])
    printed = " ".join(capsys.readouterr().out.split())
    assert f"Kept {runs / 'student-micro'}/ as it was" in printed
    assert f"Wrote {runs / 'student-micro-twin'}/" in printed
    twin = json.loads((runs / "student-micro-twin" / "report.json").read_text())
    student = json.loads((runs / "student-micro" / "report.json").read_text())
    assert (runs / "student-micro" / "weights.safetensors").read_bytes() == weights
    assert student["gain_over_twin"] == pytest.approx(student["evaluation"]["test"]["top1"]
                                                      - twin["evaluation"]["test"]["top1"])


def test_distill_report_writes_the_table_json_and_plot(teacher_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    main(["student", "--recipe", "micro", "--teacher", str(teacher_run), "--runs", str(runs),
          "--no-twin", *QUICK])
    main(["report", str(teacher_run), str(runs / "student-micro"), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "teacher" in printed and "student-micro" in printed
    # Captured output is not a terminal: each run is still one row, not squeezed into 80 columns.
    [row] = [line for line in printed.splitlines() if line.startswith("│ student-micro")]
    assert row.count("%") == 5 and "962" in row
    table = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["kind"] for r in table] == ["teacher", "student"]
    # Given only the students, the table still shows the teacher they were distilled from.
    main(["report", str(runs), "--no-measure"])
    table = json.loads((runs / "comparison.json").read_text())
    assert [(r["kind"], r["run"]) for r in table] == [("teacher", str(teacher_run)),
                                                      ("student", str(runs / "student-micro"))]
    # A copy of their teacher (a release of it) is the same network: one teacher row...
    shutil.copytree(teacher_run, runs / "teacher-b")
    main(["report", str(runs), "--no-measure"])
    table = json.loads((runs / "comparison.json").read_text())
    assert sorted((r["kind"], r["run"]) for r in table) == sorted([
        ("student", str(runs / "student-micro")), ("teacher", str(runs / "teacher-b"))])
    # ... but beside another teacher, the students' own teacher is still shown.
    (runs / "teacher-b" / "weights.safetensors").write_bytes(b"another network's weights")
    main(["report", str(runs), "--no-measure"])
    table = json.loads((runs / "comparison.json").read_text())
    assert sorted((r["kind"], r["run"]) for r in table) == sorted([
        ("student", str(runs / "student-micro")), ("teacher", str(runs / "teacher-b")),
        ("teacher", str(teacher_run))])
    assert "| teacher | digitnet |" in (tmp_path / "comparison.md").read_text()
    assert (tmp_path / "accuracy_vs_size.png").stat().st_size > 10_000


def test_the_teachers_weights_are_bit_identical_after_distillation(teacher_run, tmp_path,
                                                                    data_dir):
    teacher = load_teacher(teacher_run)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    recipe = load_recipe("micro")
    config = recipe.train_config()
    config.epochs = 1
    train_run("s", tmp_path / "s", config, "test", data_dir,
              Limits(train_batches=3, val_batches=1, test_size=100), progress=False,
              teacher=teacher, distillation=recipe.distillation)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_several_recipes_in_one_command_share_the_teachers_logits(teacher_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    main(["student", "--recipe", "mlp", "--recipe", "micro", "--teacher", str(teacher_run),
          "--runs", str(runs), *QUICK])
    for run in ("student-mlp", "student-mlp-twin", "student-micro", "student-micro-twin"):
        assert (runs / run / "report.json").is_file(), run
    out = capsys.readouterr().out
    # Both recipes augment, batch and seed alike: the second reads the first one's teacher logits.
    assert out.count("Teacher logits for") == 1
    assert "points of test top-1 (recipe mlp, seed 0)" in out
    assert "points of test top-1 (recipe micro, seed 0)" in out
    assert f"distill report {runs}" in out

    # Run again, the finished recipes are refused unless kept with --resume, which trains nothing.
    args = ["student", "--recipe", "mlp", "--recipe", "micro", "--teacher", str(teacher_run),
            "--runs", str(runs), *QUICK]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1 and "--resume to keep it" in capsys.readouterr().out
    weights = (runs / "student-micro" / "weights.safetensors").read_bytes()
    shutil.rmtree(runs / ".cache")
    main([*args, "--resume"])
    out = capsys.readouterr().out
    assert "epoch 1/1" not in out and "Teacher logits" not in out
    assert (runs / "student-micro" / "weights.safetensors").read_bytes() == weights


def test_a_clash_in_the_last_of_several_recipes_stops_before_the_first_trains(teacher_run,
                                                                               tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "student-micro" / "checkpoints").mkdir(parents=True)  # an unfinished run
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "mlp", "--recipe", "micro", "--teacher", str(teacher_run),
              "--runs", str(runs), *QUICK])
    assert exit_.value.code == 1
    assert "holds an unfinished run" in capsys.readouterr().out
    assert not (runs / "student-mlp").exists() and not (runs / ".cache").exists()
    # `all` takes micro in too, and leaves tiny-fashion-mnist out (MNIST's students only: two
    # datasets would be refused before the clash is found)
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "all", "--teacher", str(teacher_run), "--runs", str(runs),
              *QUICK])
    assert exit_.value.code == 1
    assert "student-micro holds an unfinished run" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "mlp", "--recipe", "micr", "--runs", str(runs), *QUICK])
    assert exit_.value.code == 1
    assert "Did you mean 'micro'" in capsys.readouterr().out
    assert not (runs / "student-mlp").exists()


def test_all_recipes_on_another_dataset_take_its_own_version_of_a_recipe(tmp_path, capsys):
    """`--recipe all --dataset fashion-mnist` distills tiny-fashion-mnist in place of tiny, not
    both: an unfinished run of each tells which one the command would train."""
    runs = tmp_path / "runs"
    for name in ("student-tiny", "student-tiny-fashion-mnist"):
        (runs / name / "checkpoints").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "all", "--dataset", "fashion-mnist", "--runs", str(runs)])
    assert exit_.value.code == 1
    assert "student-tiny-fashion-mnist holds an unfinished run" in capsys.readouterr().out


def test_a_missing_teacher_tells_the_user_to_train_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--teacher", str(tmp_path / "nothing"), "--runs", str(tmp_path)])
    assert exit_.value.code == 1
    assert "distill teacher" in capsys.readouterr().out


def test_a_student_teaches_a_smaller_one(teacher_run, tmp_path, capsys):
    """A teacher assistant: tiny learns from a student of DigitNet, not from DigitNet itself;
    a feature method still needs a teacher with feature maps."""
    runs = tmp_path / "runs"
    main(["student", "--recipe", "small", "--recipe", "mlp", "--teacher", str(teacher_run),
          "--runs", str(runs), "--no-twin", *QUICK])
    assistant = runs / "student-small"
    main(["student", "--recipe", "tiny", "--teacher", str(assistant), "--runs",
          str(tmp_path / "chain"), "--no-twin", *QUICK])
    report = load_report(tmp_path / "chain" / "student-tiny")
    assert report["teacher"] == str(assistant) and report["model"] == "convnet_tiny"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "tiny-fitnet", "--teacher", str(runs / "student-mlp"),
              "--runs", str(tmp_path / "hints"), *QUICK])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 1 and "needs the teacher's feature maps" in out
    assert not (tmp_path / "hints").exists()


def fake_run(folder, kind, seed, top1, gain=None, recipe="tiny", epochs=10, teacher=None,
             teacher_weights=None):
    """A finished run's report.json with only what `distill report` reads; `teacher_weights`:
    the bytes of the teacher's weights when the run was trained (recorded as their digest)."""
    folder.mkdir(parents=True)
    report = {"name": folder.name, "model": "convnet_tiny", "kind": kind, "recipe": recipe,
              "teacher": teacher, "distillation": {"temperature": 4.0, "alpha": 0.9},
              "config": {"model": "convnet_tiny", "epochs": epochs, "seed": seed},
              "cost": {"parameters": 9042, "bytes": 40_000, "flops": 2.8e6, "latency_ms": 0.3,
                       "throughput": 12_000.0},
              "evaluation": {"test": {"top1": top1, "top2": 0.999, "ece": 0.002},
                             "augmented_test": {"top1": 0.95, "top2": 0.98, "ece": 0.01}},
              "gain_over_twin": gain}
    if teacher_weights is not None:
        report["teacher_sha256"] = hashlib.sha256(teacher_weights).hexdigest()
    (folder / "report.json").write_text(json.dumps(report))


def test_distill_report_sums_up_the_gain_over_the_twin_across_seeds(tmp_path, capsys):
    for seed, student, twin in [(0, 0.9945, 0.9940), (1, 0.9942, 0.9947), (2, 0.9950, 0.9950)]:
        runs = tmp_path / f"seed{seed}"
        fake_run(runs / "student-tiny", "student", seed, student, student - twin)
        fake_run(runs / "student-tiny-twin", "twin", seed, twin)
    # Other settings (30 epochs) are another row, not a fourth seed of tiny, named by what differs.
    fake_run(tmp_path / "long" / "student-tiny", "student", 0, 0.9957, 0.0015, epochs=30)
    main(["report", str(tmp_path / "seed0"), str(tmp_path / "seed1"), str(tmp_path / "seed2"),
          str(tmp_path / "long"), str(tmp_path / "seed0" / "student-tiny"), "--no-measure",
          "--out", str(tmp_path)])
    gains = json.loads((tmp_path / "gains.json").read_text())
    assert sorted((g["recipe"], g["seeds"], g["seeds_not_worse"]) for g in gains) == [
        ("tiny (epochs 10)", [0, 1, 2], 2), ("tiny (epochs 30)", [0], 1)]
    [three] = [g for g in gains if len(g["seeds"]) == 3]
    assert three["gains"] == pytest.approx([0.0005, -0.0005, 0.0])
    assert three["twin_top1"] == pytest.approx([0.9940, 0.9947, 0.9950])
    assert three["mean_gain"] == 0  # exactly: no "-0.00" from float noise
    markdown = (tmp_path / "comparison.md").read_text()
    assert ("| tiny (epochs 10) | kd | 0, 1, 2 | 99.46 ± 0.04 (99.45, 99.42, 99.50) | "
            "99.46 ± 0.05 (99.40, 99.47, 99.50) | +0.05, -0.05, +0.00 | +0.00 [-0.12, +0.12] | "
            "2 of 3 seeds |") in markdown
    # The interval: mean +- t(0.975, 2) * sd / sqrt(3), with t = 4.303.
    assert three["gain_interval"] == pytest.approx([-4.303 * 0.0005 / 3**0.5,
                                                    4.303 * 0.0005 / 3**0.5])
    # Runs of the same name in several folders are told apart by their folders; a run given twice
    # (in its folder and by itself) is one row.
    table = json.loads((tmp_path / "comparison.json").read_text())
    names = [r["name"] for r in table]
    assert len(names) == len(set(names)) == 7
    assert any(name.endswith("seed1/student-tiny") for name in names)
    printed = capsys.readouterr().out
    assert "Gain over the twin on mnist (test top-1" in printed
    # ... and a picture of the same: each recipe's seeds and its interval against zero.
    assert (tmp_path / "gains.png").stat().st_size > 10_000
    assert f"{tmp_path / 'gains.png'}" in printed.replace("\n", "")


def test_a_seed_run_again_elsewhere_counts_once_in_the_gains(tmp_path, capsys):
    # runs/photos/student-tiny and runs/photos-seeds/seed0/student-tiny: one seed, measured
    # twice, made a narrower interval over "four seeds".
    for seed, gain in [(0, 0.003), (1, 0.001), (2, -0.001)]:
        fake_run(tmp_path / "b-seeds" / f"seed{seed}" / "student-tiny", "student", seed, 0.99, gain)
    fake_run(tmp_path / "a" / "student-tiny", "student", 0, 0.99, 0.003)
    main(["report", str(tmp_path), "--no-measure", "--out", str(tmp_path)])
    [row] = json.loads((tmp_path / "gains.json").read_text())
    assert row["seeds"] == [0, 1, 2] and row["gains"] == pytest.approx([0.003, 0.001, -0.001])
    left_out = row["repeated"]
    assert len(left_out) == 1 and left_out[0].endswith("seed0/student-tiny")  # "a" comes first
    line = ("Counted once, as a seed run again with the same recipe, teacher and settings: "
            f"{left_out[0]} left out of the gains.")
    assert line in " ".join(capsys.readouterr().out.split())
    assert line in (tmp_path / "comparison.md").read_text()


def test_a_run_whose_report_cannot_be_read_is_left_out_and_said(tmp_path, capsys):
    fake_run(tmp_path / "student-tiny", "student", 0, 0.99, 0.001)
    fake_run(tmp_path / "student-tiny-twin", "twin", 0, 0.989)
    (tmp_path / "student-tiny-twin" / "report.json").write_text("{garbage")  # a disk's damage
    with pytest.warns(UserWarning, match=r"1 report.json file cannot be read as a run's and is "
                                         r"left out \(.*student-tiny-twin/report.json\)"):
        main(["report", str(tmp_path), "--no-measure", "--out", str(tmp_path)])
    names = [r["name"] for r in json.loads((tmp_path / "comparison.json").read_text())]
    assert names == ["student-tiny"]


def test_the_gains_group_students_by_their_teachers_weights_not_by_how_it_was_named(
        tmp_path, monkeypatch):
    for name, weights in [("teacher", b"one network"), ("copy", b"one network"),
                          ("other", b"another network")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.safetensors").write_bytes(weights)
    monkeypatch.chdir(tmp_path)
    named = {0: "teacher", 1: str(tmp_path / "teacher"), 2: "copy", 3: str(tmp_path / "other")}
    for seed, teacher in named.items():
        fake_run(tmp_path / f"seed{seed}" / "student-tiny", "student", seed, 0.9945, 0.0005,
                 teacher=teacher)
    main(["report", *(f"seed{seed}" for seed in named), "--no-measure", "--out", "out"])
    gains = json.loads((tmp_path / "out" / "gains.json").read_text())
    # A teacher given by its absolute path is shown as the user would type it from here; only
    # the rows of a teacher other than the most common one name it, the title names that one.
    assert sorted((g["recipe"], g["seeds"]) for g in gains) == [
        ("tiny", [0, 1, 2]), ("tiny (teacher other)", [3])]
    assert "95% t-interval; teacher teacher unless named)" in (
        tmp_path / "out" / "comparison.md").read_text()


def test_the_gains_group_students_by_the_teacher_they_had_not_what_its_folder_holds_now(
        tmp_path, monkeypatch):
    # A release replaced since: its old students are told from the new one's, and grouped with
    # the students of a copy of the old teacher.
    for name, weights in [("release", b"new teacher"), ("old-copy", b"old teacher")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.safetensors").write_bytes(weights)
    monkeypatch.chdir(tmp_path)
    had = {0: ("release", b"old teacher"), 1: ("release", b"old teacher"),
           2: ("old-copy", b"old teacher"),
           3: (str(tmp_path / "release" / "weights.safetensors"), b"new teacher")}
    for seed, (teacher, weights) in had.items():
        fake_run(tmp_path / f"seed{seed}" / "student-tiny", "student", seed, 0.9945, 0.0005,
                 teacher=teacher, teacher_weights=weights)
    main(["report", *(f"seed{seed}" for seed in had), "--no-measure", "--out", "out"])
    gains = json.loads((tmp_path / "out" / "gains.json").read_text())
    assert sorted((g["recipe"], g["seeds"], g["teacher"]) for g in gains) == [
        ("tiny", [0, 1, 2], "old-copy"), ("tiny (teacher release)", [3], "release")]
    # Without a copy that still holds it, the old teacher is named as an earlier one.
    shutil.rmtree(tmp_path / "seed2")
    main(["report", *(f"seed{seed}" for seed in (0, 1, 3)), "--no-measure", "--out", "out"])
    gains = json.loads((tmp_path / "out" / "gains.json").read_text())
    assert sorted(g["teacher"] for g in gains) == ["an earlier release", "release"]


def test_the_gains_plot_writes_out_a_row_that_would_squeeze_the_others(tmp_path, monkeypatch):
    # micro-fitnet lost 2.6 points where every other method moved 0.1-0.3: drawn to scale, it
    # pressed every other row against the zero line.
    from distill import plots

    def row(recipe, gains):
        mean = sum(gains) / len(gains)
        return {"recipe": recipe, "method": "kd", "seeds": list(range(len(gains))),
                "gains": gains, "mean_gain": mean, "gain_interval": [mean - 0.001, mean + 0.001],
                "teacher": "runs/teacher"}

    gains = [row("tiny", [0.001, 0.002, -0.001]), row("mlp", [0.003, 0.002, 0.0035]),
             row("small", [0.0005, -0.001, 0.001]), row("micro-fitnet", [-0.021, -0.028, -0.029])]
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_gains(gains, tmp_path / "gains.png", "mnist")
    [axes] = figures[0].axes
    low, high = axes.get_xlim()
    assert -0.5 < low < -0.35 and 0.35 < high < 0.5  # mlp's +0.35 with room, not -2.9
    [text] = [t.get_text() for t in axes.texts]
    assert text == "off the scale: mean -2.60 [-2.70, -2.50]\nseeds -2.10, -2.80, -2.90"
    # Rows of the same scale are all drawn to it.
    plots.plot_gains(gains[:3], tmp_path / "gains.png", "mnist")
    assert not figures[1].axes[0].texts


def test_the_accuracy_plot_names_releases_as_they_are_loaded(tmp_path, monkeypatch):
    # `distill report models`: a release trained from an experiment's recipe file was labelled
    # by that file's name (teacher-fashion-mnist-150) instead of the name a user loads it by.
    from distill import files, plots

    releases = files.releases_dir()
    reports = [{"kind": kind, "recipe": recipe, "name": name, "run": str(run),
                "dataset": "fashion-mnist", "cost": {"parameters": parameters},
                "evaluation": {"test": {"top1": top1}}}
               for kind, recipe, name, run, parameters, top1 in [
                   ("teacher", "teacher-fashion-mnist-150", "digitnet.fashion_mnist",
                    releases / "digitnet.fashion_mnist", 467114, 0.9398),
                   ("student", "tiny-t2-a05", "student-tiny-t2-a05",
                    tmp_path / "student-tiny-t2-a05", 9042, 0.90)]]
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_accuracy_vs_size(reports, tmp_path / "size.png")
    [figure] = figures
    assert {text.get_text() for text in figure.axes[0].texts} == {"digitnet.fashion_mnist",
                                                                   "tiny-t2-a05"}


def test_the_accuracy_plot_labels_networks_of_nearly_the_same_size_apart(tmp_path, monkeypatch):
    # convnet_8k (7,946 parameters) and tiny (9,042) sit almost on one x on a log axis; their
    # labels used to be written over each other.
    from distill import plots

    reports = [{"kind": "student", "recipe": recipe, "name": recipe, "dataset": "mnist",
                "cost": {"parameters": parameters},
                "evaluation": {"test": {"top1": top1}}}
               for recipe, parameters, top1 in [("convnet-8k-long-and-more", 7946, 0.9953),
                                                ("tiny-long-and-more", 9042, 0.9954),
                                                ("small", 53554, 0.9955),
                                                ("micro", 962, 0.9600)]]
    # Two teachers (an ensemble's), the weaker first: the dotted level is the better one's.
    reports += [{"kind": "teacher", "name": name, "cost": {"parameters": 467114},
                 "evaluation": {"test": {"top1": top1}}}
                for name, top1 in [("teacher-seed1", 0.9943), ("teacher", 0.9955)]]
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_accuracy_vs_size(reports, tmp_path / "size.png")
    [figure] = figures
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = {text.get_text(): text.get_window_extent(renderer)
             for text in figure.axes[0].texts}
    assert set(boxes) == {"convnet-8k-long-and-more", "tiny-long-and-more", "small", "micro",
                          "teacher", "(and 1 other recipe)"}
    [level] = [line.get_ydata()[0] for line in figure.axes[0].lines]
    assert level == pytest.approx(99.55)
    for first, second in itertools.combinations(boxes, 2):
        assert not boxes[first].overlaps(boxes[second]), (first, second)
