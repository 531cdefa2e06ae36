"""The transfer set: few labels, no labels, classes never seen, and the label-free bias."""

import json

import onnx
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from distill.cli import main
from distill.data import DataModule, normalize
from distill.datasets import get_dataset
from distill.transfer import (
    UNLABELED,
    bias_correction,
    labeled_cross_entropy,
    labeled_mask,
    omitted_bias,
)
from tests.conftest import QUICK


def write_recipe(folder, name, data, distillation="{method: kd}"):
    path = folder / f"{name}.yaml"
    path.write_text(f"network: convnet_tiny\ndistillation: {distillation}\ndata: {data}\n"
                    "batch_size: 32\n")
    return str(path)


def test_labeled_mask_takes_the_fraction_of_every_class_from_the_seed():
    labels = torch.arange(10).repeat_interleave(1000)
    mask = labeled_mask(labels, 0.01, seed=0)
    assert [int(mask[labels == c].sum()) for c in range(10)] == [10] * 10
    assert torch.equal(mask, labeled_mask(labels, 0.01, seed=0))
    assert not torch.equal(mask, labeled_mask(labels, 0.01, seed=1))
    # A fraction too small for a class still keeps one image of it; 0 keeps none.
    assert int(labeled_mask(labels, 0.0001, seed=0).sum()) == 10
    assert int(labeled_mask(labels, 0, seed=0).sum()) == 0


def test_labeled_cross_entropy_skips_unlabeled_images_and_is_zero_without_any():
    logits = torch.randn(6, 10)
    labels = torch.tensor([1, UNLABELED, 3, UNLABELED, 5, 7])
    kept = labels != UNLABELED
    assert torch.allclose(labeled_cross_entropy(logits, labels),
                          F.cross_entropy(logits[kept], labels[kept]))
    none = labeled_cross_entropy(logits, torch.full((6,), UNLABELED))
    assert none.item() == 0 and torch.isfinite(none)


def test_the_bias_gives_an_omitted_class_the_teachers_share():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(2000, 10, generator=generator) * 3
    student = teacher.clone()
    student[:, 3] -= 20  # never predicts a 3
    bias = omitted_bias(student, teacher, [3])
    share = lambda logits: (logits.argmax(-1) == 3).float().mean().item()  # noqa: E731
    shifted = student.clone()
    shifted[:, 3] += bias[3]
    assert share(student) == 0
    assert abs(share(shifted) - share(teacher)) < 0.002
    labels = teacher.argmax(-1)
    figures = bias_correction(student, labels, student, teacher, [3])
    assert figures["before"]["omitted_top1"] == 0 and figures["after"]["omitted_top1"] > 0.95


def test_the_student_keeps_every_image_and_the_twin_only_the_labeled_ones(data_dir):
    common = dict(data_dir=data_dir, batch_size=64, seed=0, train_size=5000,
                  labeled_fraction=0.01, exclude_classes=[3])
    student = DataModule(**common, keep_unlabeled=True)
    twin = DataModule(**common)
    student.setup(), twin.setup()
    images, labels = student.train_split.images, student.train_split.labels
    assert len(images) == len(twin.train_split)  # the same number of steps an epoch
    assert not (labels == 3).any() and not (student.val_split.labels == 3).any()
    labeled = labels != UNLABELED
    assert int(labeled.sum()) == student.labeled_images == twin.labeled_images
    # The twin's images are the student's labeled ones, repeated, each copy augmented its own way.
    assert set(twin.train_split.positions.tolist()) == set(range(len(images)))
    assert {bytes(x.numpy()) for x in twin.train_split.images} == {
        bytes(x.numpy()) for x in images[labeled]}
    assert (twin.train_split.labels != UNLABELED).all()
    # Rows of the training file, which both splits share: repeated, the images are not copied.
    assert twin.train_split.source.data_ptr() == twin.val_split.source.data_ptr()


def test_few_labels_no_labels_and_an_omitted_class_end_to_end(teacher_run, data_dir, tmp_path,
                                                               capsys):
    runs = tmp_path / "runs"
    few = write_recipe(tmp_path, "few", "{labeled_fraction: 0.01}", "{method: dkd}")
    none = write_recipe(tmp_path, "none", "{labeled_fraction: 0}")
    no3 = write_recipe(tmp_path, "no3", "{exclude_classes: [3]}")
    main(["student", "--recipe", few, "--recipe", none, "--recipe", no3, "--teacher",
          str(teacher_run), "--runs", str(runs), *QUICK])
    out = capsys.readouterr().out
    assert "No twin: with data.labeled_fraction 0" in out
    # Without a label there is no validation accuracy to show (not a 0.00%).
    none_epoch = next(line for line in out.splitlines() if line.startswith("student-none: epoch"))
    assert "val distillation loss" in none_epoch and "top-1" not in none_epoch
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == [
        "student-few", "student-few-twin", "student-no3", "student-no3-twin", "student-none"]
    report = lambda name: json.loads((runs / name / "report.json").read_text())  # noqa: E731
    few_student, few_twin = report("student-few"), report("student-few-twin")
    assert few_student["transfer"]["labeled_images"] == few_twin["transfer"]["labeled_images"]
    assert few_student["transfer"]["labeled_images"] == 550  # 1% of each class of 55,000
    assert few_student["gain_over_twin"] is not None
    assert report("student-none")["transfer"]["labeled_images"] == 0
    assert "teacher alone, and has no twin" in (runs / "student-none" / "report.md").read_text()
    for name in ("student-no3", "student-no3-twin"):
        omitted = report(name)["transfer"]["omitted"]
        assert omitted["classes"] == [3] and set(omitted) >= {"before", "after", "bias",
                                                              "validation_agreement"}
        assert "without labels" in omitted["chosen_on"]
        assert "Classes never seen in training: 3" in (runs / name / "report.md").read_text()
    main(["report", str(runs), "--out", str(tmp_path / "table")])
    table = (tmp_path / "table" / "comparison.md").read_text()
    assert "no 3" in table and "labels" in table
    answers_with_the_bias(runs / "student-no3", report("student-no3"), data_dir, tmp_path, capsys)


def answers_with_the_bias(run, report, data_dir, tmp_path, capsys):
    """predict and a release's card add the report's bias to a never-seen class's logit, as
    the report's figures after the bias do; the weights stay the network as trained."""
    from distill.export import load_model
    from distill.predict import load_image, prepare

    mnist = get_dataset("mnist")
    images, _ = mnist.load("test", data_dir)
    Image.fromarray(images[18].numpy()).save(tmp_path / "three.png")  # a 3 of the test set
    capsys.readouterr()
    main(["predict", str(run), str(tmp_path / "three.png"), "--json"])
    captured = capsys.readouterr()
    bias = report["transfer"]["omitted"]["bias"]["3"]
    assert f"3: {bias:+.2f}" in captured.err
    answered = {a["index"]: a["probability"] for a in json.loads(captured.out)[0]["top2"]}
    model, _ = load_model(run)
    with torch.inference_mode():
        image = prepare(load_image(tmp_path / "three.png", mnist), mnist).image
        logits = model(normalize(image[None, None], mnist)).float()[0]
    expected = (logits + torch.eye(10)[3] * bias).softmax(-1)
    assert all(abs(p - expected[c].item()) < 1e-4 for c, p in answered.items())
    from distill.demo import load_demo_models

    (shown,), _ = load_demo_models([run])
    assert shown.shift is not None and shown.shift[3].item() == pytest.approx(bias)
    main(["evaluate", str(run), "--test-images", "200"])  # the test images its report scored
    said = " ".join(capsys.readouterr().out.split())  # as one line, however the console wrapped
    assert "never saw 3 in training: the bias its report chose without labels is added" in said
    assert f"3: {bias:+.2f}" in said
    main(["evaluate", str(run), "--test-images", "200", "--json"])
    (scored,) = json.loads(capsys.readouterr().out)
    assert scored["logit_bias"] == {"3": pytest.approx(bias)}
    after = report["transfer"]["omitted"]["after"]["top1"]
    assert scored["test"]["top1"] == pytest.approx(after)
    main(["export", str(run), "--out", str(tmp_path / "no3.onnx"), "--test-images", "100"])
    assert "the bias for the classes never seen in training (logit_bias)" in capsys.readouterr().out
    metadata = onnx.load(str(tmp_path / "no3.onnx")).metadata_props
    assert json.loads(next(p.value for p in metadata if p.key == "logit_bias")) == {"3": bias}
    main(["publish", str(run), str(tmp_path / "release" / "convnet_tiny")])
    card = (tmp_path / "release" / "convnet_tiny" / "README.md").read_text()
    assert "It never saw 3 in training" in card and f"logits[:, 3] += {bias:.4f}" in card


def test_classes_never_seen_are_named_as_the_dataset_names_them():
    from distill.datasets import get_dataset
    from distill.report import omitted_rows, transfer_lines, transfer_text
    from distill.transfer import excluded_text

    garments = list(get_dataset("fashion-mnist").classes)
    figures = {"top1": 0.8, "omitted_top1": 0.0, "others_top1": 0.89}
    report = {"name": "student-no-dress", "kind": "student", "classes": garments,
              "transfer": {"labeled_fraction": 1.0, "labeled_images": 55_000,
                           "excluded_classes": [3], "omitted": {
                               "classes": [3], "bias": {"3": 0.52}, "before": figures,
                               "after": figures, "chosen_on": "validation images"}}}
    assert transfer_text(report) == "all labels, no Dress"
    assert "Classes never seen in training: Dress." in transfer_lines(report)[0]
    assert "(Dress: +0.52)" in transfer_lines(report)[0]
    assert omitted_rows([report])[0][1] == "Dress"
    # A report from before reports named their classes is MNIST's: digits name themselves.
    del report["classes"]
    assert transfer_text(report) == "all labels, no 3"
    assert excluded_text([0, 1, 2, 3, 4, 5], garments) == "only Shirt, Sneaker, Bag, Ankle boot"


@pytest.mark.parametrize("data, message", [
    ("{labeled_fraction: 1.5}", "'data.labeled_fraction' is 1.5; it must be between 0 and 1"),
    ("{exclude_classes: [3, 3]}", "distinct class indices"),
    ("{exclude_classes: [10]}", "must name some of the 10 classes"),
    ("{exclude_classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}", "not all of them"),
    ("{labeled_fractoin: 0.1}", "Did you mean 'data.labeled_fraction'?"),
])
def test_bad_transfer_settings_are_one_line(teacher_run, tmp_path, capsys, data, message):
    recipe = write_recipe(tmp_path, "bad", data)
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", recipe, "--teacher", str(teacher_run), "--runs",
              str(tmp_path / "runs"), *QUICK])
    assert exit_.value.code != 0
    said = capsys.readouterr()
    said = " ".join((said.out + said.err).split())
    assert message in said and "Traceback" not in said
    assert not (tmp_path / "runs" / "student-bad").exists()


def test_classes_a_folder_lacks_are_refused_before_its_summary(tmp_path, capsys):
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
        for k in range(20):
            Image.new("RGB", (30, 30), (10 * k, 90, 200 * (name == "cat"))).save(
                photos / name / f"{k}.png")
    main(["teacher", "--dataset", str(photos), "--out", str(tmp_path / "runs" / "teacher"),
          "--batch-size", "4", *QUICK])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "tiny-7s-8s", "--dataset", str(photos), "--runs",
              str(tmp_path / "runs"), *QUICK])
    said = capsys.readouterr()
    said = " ".join((said.out + said.err).split())
    assert exit_.value.code != 0 and "2 classes (cat, dog)" not in said  # the folder's summary
    assert "must name some of the 2 classes" in said and "(0 to 1: cat, dog)" in said
    assert "distill recipes tiny-7s-8s" in said
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["teacher"]


def test_the_cache_serves_a_transfer_set_as_the_online_teacher_does(teacher_run, tmp_path):
    """The teacher's cached logits on training views and validation images line up with the
    images of a run that leaves a class out: the student's weights equal the online teacher's."""
    recipe = write_recipe(tmp_path, "no3", "{exclude_classes: [3], labeled_fraction: 0.5}")
    for name, cache in (("cached", "--teacher-cache"), ("online", "--no-teacher-cache")):
        main(["student", "--recipe", recipe, "--teacher", str(teacher_run), "--runs",
              str(tmp_path / name), "--no-twin", cache, *QUICK])
    cached, online = (tmp_path / name / "student-no3" for name in ("cached", "online"))
    weights = [load_file(run / "weights.safetensors") for run in (cached, online)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert (cached / "logs" / "metrics.csv").read_text() == (
        online / "logs" / "metrics.csv").read_text()
