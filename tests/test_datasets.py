"""The dataset registry: MNIST, Fashion-MNIST and a folder of images, end to end."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from distill import report as report_module
from distill.augment import Augment, augment
from distill.cli import main
from distill.datasets import get_dataset
from distill.errors import DistillError
from distill.export import load_model

from .conftest import QUICK, REPO


def test_fashion_mnist_is_read_and_checked_by_its_uncompressed_bytes(fashion_dir):
    dataset = get_dataset("fashion-mnist")
    images, labels = dataset.load("train", fashion_dir, download=False)
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [6000] * 10
    assert dataset.classes[7] == "Sneaker" and dataset.augment.hflip


def test_evaluate_scores_each_datasets_networks_in_a_table_of_their_own(fashion_dir, capsys,
                                                                        monkeypatch):
    """`distill evaluate models/*` (the README's) scores MNIST's and Fashion-MNIST's releases
    apart; the teacher's agreement only where it is the networks' own dataset's."""
    monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(fashion_dir))
    models = [str(REPO / "models" / name) for name in ("convnet_tiny", "convnet_tiny.fashion_mnist",
                                                        "digitnet.fashion_mnist")]
    teacher = ["--teacher", str(REPO / "models" / "digitnet")]
    main(["evaluate", *models, *teacher, "--test-images", "200", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [(r["dataset"], "teacher_agreement" in r) for r in results] == [
        ("mnist", True), ("fashion-mnist", False), ("fashion-mnist", False)]
    assert results[2]["test"]["top1"] > 0.8  # each read as its own dataset
    main(["evaluate", *models, *teacher, "--test-images", "200"])
    said = " ".join(capsys.readouterr().out.split())
    assert "mnist, 200 test images; agreement with" in said and "fashion-mnist, 200 test images" in said
    assert "digitnet was trained on mnist: the networks of fashion-mnist are scored without" in said
    for extra, why in ((["--ensemble"], "--ensemble averages them"),
                       (["--data-dir", str(fashion_dir)], "--data-dir names one dataset's files")):
        with pytest.raises(SystemExit) as exit_:
            main(["evaluate", *models, *extra])
        assert exit_.value.code == 1
        said = " ".join(capsys.readouterr().out.split())
        assert "(mnist at 28x28: " in said and why in said, said
    with pytest.raises(SystemExit):  # one dataset's networks, another's teacher
        main(["evaluate", models[1], *teacher, "--test-images", "200"])
    assert "fashion-mnist has T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, ...: give a " \
        "teacher of fashion-mnist." in " ".join(capsys.readouterr().out.split())


def test_one_datasets_files_given_for_the_other_are_named_as_a_mix_up(data_dir, fashion_dir,
                                                                      capsys):
    """MNIST and Fashion-MNIST share their file names: the wrong folder is said as such, not as
    damaged files to replace."""
    with pytest.raises(SystemExit):
        main(["evaluate", str(REPO / "models" / "digitnet.fashion_mnist"), "--data-dir",
              str(data_dir)])
    said = capsys.readouterr().out
    assert ("t10k-images-idx3-ubyte.gz is mnist's t10k-images-idx3-ubyte, not fashion-mnist's: "
            "point --data-dir (or $DISTILL_FASHION_MNIST_DIR) at a folder of fashion-mnist's"
            in " ".join(said.split()))
    with pytest.raises(DistillError, match="is fashion-mnist's train-images-idx3-ubyte, not "
                                           "mnist's: point --data-dir \\(or \\$DISTILL_DATA_DIR"):
        get_dataset("mnist").load("train", fashion_dir, download=False)


def test_an_unknown_dataset_suggests_the_closest(tmp_path):
    with pytest.raises(DistillError, match="Did you mean 'fashion-mnist'"):
        get_dataset("fashion-mnsit")


def test_a_horizontal_flip_mirrors_exactly_half_the_draws():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    uniforms = torch.zeros(2, 6)
    uniforms[0, 5], uniforms[1, 5] = 0.2, 0.8  # below 0.5: mirrored
    out = augment(x, uniforms, Augment(0, 0, 0, hflip=True))
    assert torch.allclose(out[0], x[0].flip(-1), atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)


def write_folder(root: Path, data_dir: Path, per_class: int = 24, classes=(0, 1, 7)) -> Path:
    """PNGs of real MNIST test digits in class subfolders, some bigger and in colour, one broken."""
    from distill.data import load_split

    images, labels = load_split("test", data_dir)
    for name in classes:
        folder = root / f"digit-{name}"
        folder.mkdir(parents=True)
        picked = (labels == name).nonzero().flatten()[:per_class]
        for k, i in enumerate(picked.tolist()):
            image = Image.fromarray(images[i].numpy())
            if k % 3 == 1:
                image = image.convert("RGB").resize((40, 40))
            image.save(folder / f"{k}.png")
    (root / f"digit-{classes[0]}" / "broken.png").write_bytes(b"not a png")
    return root


def test_a_folder_of_images_goes_through_teacher_student_and_report(data_dir, tmp_path, capsys,
                                                                    monkeypatch):
    root = write_folder(tmp_path / "digits", data_dir)
    confusion_axes = []  # the class names on each confusion matrix's axes, as drawn
    plot_confusion = report_module.plot_confusion

    def recorded(matrix, out, **kwargs):
        with monkeypatch.context() as patch:
            patch.setattr(Figure, "savefig", lambda fig, *a, **k: confusion_axes.append(
                [t.get_text() for t in fig.axes[0].get_yticklabels()]))
            plot_confusion(matrix, out, **kwargs)

    monkeypatch.setattr(report_module, "plot_confusion", recorded)
    with pytest.warns(UserWarning, match="1 file"):
        dataset = get_dataset(str(root))
    # Some images are in colour: the whole folder is decoded as RGB.
    assert dataset.classes == ("digit-0", "digit-1", "digit-7") and dataset.channels == 3
    train, test = dataset.load("train"), dataset.load("test")
    assert len(train[0]) + len(test[0]) == 72 and train[0].shape[1:] == (3, 28, 28)
    runs = tmp_path / "runs"
    args = ["--dataset", str(root), "--epochs", "1", "--test-images", "20", "--no-progress"]
    main(["teacher", "--out", str(runs / "teacher"), "--batch-size", "16", *args])
    recipe = tmp_path / "small-batches.yaml"
    recipe.write_text("network: convnet_tiny\nbatch_size: 16\n")
    # Every method takes the folder's images: FitNets' adapter is sized on RGB feature maps.
    methods = [tmp_path / f"{method}.yaml" for method in ("fitnet", "function_matching")]
    for path in methods:
        path.write_text(f"network: convnet_tiny\nbatch_size: 16\ndistillation: {{method: {path.stem}}}\n")
    main(["student", "--recipe", str(recipe), *(a for path in methods for a in ("--recipe", str(path))),
          "--teacher", str(runs / "teacher"), "--runs", str(runs), *args])
    main(["report", str(runs)])  # timed again on RGB images
    out = capsys.readouterr().out
    assert f"Teacher and students on folder:{root}" in out
    # Before training, each command says what it found in the folder.
    found = (f"{root}: 3 classes (digit-0, digit-1, digit-7), 60 training images (6 of them for "
             "validation) and 12 test images (held out at random, the same on every run), "
             "decoded in RGB at 28x28.")
    assert " ".join(out.split()).count(found) == 2  # teacher and student
    student = json.loads((runs / "student-small-batches" / "report.json").read_text())
    assert student["dataset"] == f"folder:{root}" and student["classes"][2] == "digit-7"
    assert len(student["evaluation"]["per_class_accuracy"]) == 3
    # Every run's confusion matrix is labelled by class name, not by index.
    assert confusion_axes and all(axis == ["digit-0", "digit-1", "digit-7"]
                                  for axis in confusion_axes)
    # predict fits a picture to the folder's networks as the folder was decoded, and names it.
    main(["predict", str(runs / "student-small-batches"), str(root / "digit-7" / "1.png"), "--json"])
    answer = json.loads(capsys.readouterr().out)[0]
    assert answer["top2"][0]["class"] in dataset.classes and "inverted" not in answer


def test_a_folder_network_is_scored_published_and_taught_at_its_size_and_classes(
        data_dir, tmp_path, capsys, monkeypatch):
    # Every network ends in global pooling, so 28x28 images would go through one trained at 20x20
    # and score worse without a word: each command takes the size from the weights file.
    root = write_folder(tmp_path / "digits", data_dir)
    teacher = tmp_path / "runs" / "teacher"
    with pytest.warns(UserWarning, match="1 file"):
        main(["teacher", "--dataset", str(root), "--image-size", "20", "--out", str(teacher),
              "--batch-size", "16", "--epochs", "1", "--no-progress"])
    trained = json.loads((teacher / "report.json").read_text())
    # MNIST-sized epochs make few steps on a small folder: the command says so before training.
    assert ("teacher: 1 epoch of 54 images in batches of 16 make only 3 steps, few to learn from: "
            "give more --epochs (about 334 for 1,000 steps), or a smaller --batch-size") in " ".join(
        capsys.readouterr().out.split())
    # distill student has no --batch-size: a student's batch is its recipe's.
    from distill.cli import fit_to_folders
    from distill.recipes import load_recipe, overridden

    tiny = overridden(load_recipe("tiny"), dataset=str(root), image_size=20, epochs=1,
                      batch_size=16)
    assert fit_to_folders([tiny], epochs_given=True, batch_option=False) == [tiny]
    assert "or a smaller batch_size in a recipe of your own" in " ".join(
        capsys.readouterr().out.split())
    # Without --epochs, a recipe's MNIST-sized epochs become enough for the folder.
    fitted = fit_to_folders([overridden(tiny, epochs=10)], epochs_given=False)[0].schedule
    assert (fitted.epochs, fitted.patience) == (334, 101)  # 3 steps an epoch; patience 3 x 33.4
    assert ("tiny: 10 epochs of 54 images in batches of 16 would make only 30 steps, few to learn "
            "from: it trains for up to 334 epochs (1,002 steps; patience 101 epochs). --epochs "
            "sets another number.") in " ".join(capsys.readouterr().out.split())
    kept = fit_to_folders([overridden(tiny, epochs=10, patience=5)], epochs_given=False,
                          patience_given=True)[0].schedule  # distill teacher --patience 5
    assert (kept.epochs, kept.patience) == (334, 5) and "patience 5 epochs" in capsys.readouterr().out
    main(["evaluate", str(teacher), "--json"])
    scored = json.loads(capsys.readouterr().out)[0]
    assert scored["test"] == trained["evaluation"]["test"]
    assert scored["flops"] == trained["cost"]["flops"]
    main(["export", str(teacher)])
    import onnx

    shape = onnx.load(teacher / "model.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape[1:]] == [3, 20, 20]
    from distill.demo import load_demo_models

    assert load_demo_models([teacher])[1].size == 20  # the demo fits pictures to 20x20
    # Its card's snippet builds it in timm as trained: 3 channels, 20x20, the trained head.
    monkeypatch.chdir(tmp_path)
    main(["publish", str(teacher), "models/digitnet.digits"])
    card = (tmp_path / "models" / "digitnet.digits" / "README.md").read_text()
    assert "Inputs are 20x20 RGB images of digits" in card
    # The images are the user's: the card claims no license for the weights learned from them.
    assert "license: other" in card and "learned from the images of digits and follow their " \
        "owner's terms" in card
    scope = {}
    exec(card.split("```python\n")[1].split("```")[0], scope)
    x = torch.randn(2, 3, 20, 20)
    assert torch.equal(scope["model"](x), load_model(teacher)[0](x))
    with pytest.raises(SystemExit) as exit_:  # another size asked for: refused before decoding
        main(["student", "--recipe", "tiny", "--dataset", str(root), "--teacher", str(teacher),
              "--runs", str(tmp_path / "runs"), "--epochs", "1", "--no-progress",
              "--image-size", "28"])
    said = capsys.readouterr()
    out = " ".join(said.out.split())
    assert exit_.value.code == 1 and "trained on 20x20 images" in out and "--image-size 20" in out
    assert "Decoding" not in said.err and not (tmp_path / "runs" / "student-tiny").exists()
    # None asked for: the student distills at its teacher's size (and says so); a batch larger
    # than the folder says how a student's is made smaller (it has no --batch-size).
    with pytest.raises(SystemExit), pytest.warns(UserWarning, match="1 file"):
        main(["student", "--recipe", "tiny", "--dataset", str(root), "--teacher", str(teacher),
              "--runs", str(tmp_path / "runs"), "--epochs", "1", "--no-progress"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"The teacher {teacher} was trained on 20x20 images: tiny distills at that size" in out
    assert ("The batch size 128 is larger than the 54 training images: give a recipe of your own "
            "(distill recipes tiny prints this one) a smaller batch_size.") in out
    from distill.pipeline import at_teachers_size

    assert at_teachers_size(tiny, [teacher], size_given=False) == tiny  # tiny is at 20 already
    assert at_teachers_size(overridden(tiny, image_size=28), [teacher],
                            size_given=False).image_size == 20
    assert "tiny distills at that size" in capsys.readouterr().out
    # Scored on another folder of its classes, it reads it normalized as its own training images;
    # a folder of other classes is refused rather than scored against the wrong names.
    from distill.export import read_as_trained

    other = get_dataset(str(write_folder(tmp_path / "more", data_dir, per_class=6)), 20)
    assert other.mean != get_dataset(str(root), 20).mean
    assert read_as_trained(teacher, other).mean == get_dataset(str(root), 20).mean
    # Networks of two folders scored together on a third each keep their own normalization, and
    # are not averaged on one reading of the images.
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(teacher / "weights.safetensors"), "pt") as f:
        metadata = f.metadata()
    elsewhere = tmp_path / "elsewhere.safetensors"
    save_file(load_file(teacher / "weights.safetensors"), elsewhere, metadata={
        **metadata, "normalization": json.dumps({"mean": [0.9] * 3, "std": [0.1] * 3})})
    # The first six digits of each class, copied from the folder it was trained on (the test
    # digits write_folder takes first): those it trained on are found pixel for pixel and said.
    with pytest.warns(UserWarning) as said:
        main(["evaluate", str(teacher), "--dataset", str(other.root), "--json"])
    alone = json.loads(capsys.readouterr().out)[0]
    assert alone["all_images"] == 18  # a folder it never saw is scored whole, not a sixth of it
    found = next(str(w.message) for w in said if "pixel for pixel" in str(w.message))
    from distill.data import scored_split

    scored = scored_split("all", None, other)[0].flatten(1)
    held_out = (get_dataset(str(root), 20).load("test")[0].flatten(1)[:, None]
                == scored[None]).all(-1).any(0).sum()  # its test digits: never trained on
    assert 0 < held_out < 18
    first = re.search(r"trained on \((\S+) is (\S+), \.\.\.\)", found)
    assert found == (f"{18 - int(held_out)} of these 18 images are, pixel for pixel, among the 60 "
                     f"training and validation images of {root.resolve()}, which these networks "
                     f"were trained on ({first[1]} is {first[2]}, ...): their score counts them "
                     "as new.")
    copy, original = Path(first[1]), Path(first[2])  # the first copy named, found as written
    assert copy.relative_to(other.root) == original.relative_to(root.resolve())
    assert copy.read_bytes() == original.read_bytes()
    main(["evaluate", str(elsewhere), str(teacher), "--dataset", str(other.root), "--json"])
    together = json.loads(capsys.readouterr().out)
    assert together[1]["all"] == alone["all"] != together[0]["all"]
    with pytest.raises(SystemExit):  # its own folder whole would count its training images
        main(["evaluate", str(teacher), "--split", "all"])
    assert "--split all would score networks on folder:" in capsys.readouterr().out
    # A network of a folder with train/ and test/ trees, scored on its train/ tree under that
    # path, would count its training images as new ones; its test/ tree is new to it.
    photos = tmp_path / "photos"
    write_folder(photos / "train", data_dir, per_class=6), write_folder(photos / "test", data_dir,
                                                                        per_class=3)
    of_photos = tmp_path / "of-photos.safetensors"
    save_file(load_file(teacher / "weights.safetensors"), of_photos,
              metadata={**metadata, "dataset": f"folder:{photos.resolve()}"})
    with pytest.raises(SystemExit):
        main(["evaluate", str(of_photos), "--dataset", str(photos / "train")])
    said = capsys.readouterr()
    assert (f"{(photos / 'train').resolve()} is within {photos.resolve()}, the folder "
            f"{of_photos} was trained on: its score would count training images as new ones"
            in " ".join(said.out.split())) and "Decoding" not in said.err
    with pytest.warns(UserWarning, match="1 file"):
        main(["evaluate", str(of_photos), "--dataset", str(photos / "test"), "--json"])
    assert json.loads(capsys.readouterr().out)[0]["all_images"] == 9
    with pytest.raises(SystemExit):
        main(["evaluate", str(elsewhere), str(teacher), "--dataset", str(other.root), "--ensemble"])
    assert "normalized differently" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a teacher of neither of two datasets' networks
        main(["evaluate", str(REPO / "models" / "convnet_tiny"),
              str(REPO / "models" / "convnet_tiny.fashion_mnist"), "--teacher", str(teacher)])
    assert (f"{teacher} was trained on folder:{root.resolve()} at 20x20, and none of these "
            "networks was (mnist at 28x28: models/convnet_tiny; ") in " ".join(
        capsys.readouterr().out.split())
    fewer = write_folder(tmp_path / "fewer", data_dir, per_class=4, classes=(0, 1))
    with pytest.raises(SystemExit):
        main(["evaluate", str(teacher), "--dataset", str(fewer)])
    said = capsys.readouterr()
    assert "answers for the classes digit-0, digit-1, digit-7, and" in " ".join(said.out.split())
    assert "give a dataset with the network's classes" in " ".join(said.out.split())
    assert "Decoding" not in said.err  # refused from its class folders, before decoding them
    with pytest.raises(SystemExit):  # a network of a named dataset is sent back to it
        main(["evaluate", str(REPO / "models" / "convnet_tiny"), "--dataset", "fashion-mnist"])
    assert ("fashion-mnist has T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, ...: it was "
            "trained on mnist: leave out --dataset to score it there, or give a network of "
            "fashion-mnist.") in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):  # was "trained on different datasets (..., mnist)"
        main(["evaluate", str(teacher), str(tmp_path / "nothing")])
    assert "No weights at" in capsys.readouterr().out
    # The release answers where its folder is not (its weights file says how the folder's images
    # were normalized) as it did beside it; what needs the folder's images says so in a line.
    picture = shutil.copy(root / "digit-7" / "1.png", tmp_path / "seven.png")
    main(["predict", "models/digitnet.digits", str(picture), "--json"])
    beside = json.loads(capsys.readouterr().out)[0]["top2"]
    root.rename(tmp_path / "moved")
    main(["predict", "models/digitnet.digits", str(picture), "--json"])
    assert json.loads(capsys.readouterr().out)[0]["top2"] == beside
    with pytest.raises(SystemExit):
        main(["evaluate", "models/digitnet.digits"])
    assert f"trained on the images in {root}, which is not there" in " ".join(
        capsys.readouterr().out.split())


def test_a_folder_is_decoded_once_and_again_when_an_image_changes(data_dir, tmp_path, monkeypatch,
                                                                     capsys):
    from distill.datasets.folder import decoded

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "digits", data_dir, per_class=4)
    (root / "digit-0" / "broken.png").unlink()

    def decode() -> tuple:
        decoded.cache_clear()  # as a new command would: only the file on disk carries over
        return decoded(root.resolve(), 28)[:3]

    first = decode()
    assert "Decoded 12 images" in capsys.readouterr().err
    kept = list((tmp_path / "cache" / "distill" / "folders").glob("digits-*.pt"))
    assert len(kept) == 1
    again = decode()
    assert capsys.readouterr().err == "" and all(map(torch.equal, first, again))
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(root / "digit-7" / "0.png")
    edited = decode()
    assert "Decoded 12 images" in capsys.readouterr().err
    assert not torch.equal(first[0], edited[0])
    # The file of the folder as it was is replaced, not kept beside.
    assert [p.name for p in kept[0].parent.glob("digits-*.pt")] != [kept[0].name]
    assert len(list(kept[0].parent.glob("digits-*.pt"))) == 1


def test_one_colour_photo_among_gray_scans_makes_the_folder_rgb(tmp_path, monkeypatch):
    # The mode was chosen from the first 20 images of each class: the photo, 31st, read in gray.
    from distill.datasets.folder import check_layout, decoded

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "scans"
    for name in ("forms", "letters"):
        (root / name).mkdir(parents=True)
        for k in range(30):
            Image.new("L", (32, 32), 8 * k).save(root / name / f"{k:02d}.png")
    Image.new("RGB", (32, 32), (250, 10, 10)).save(root / "letters" / "photo.jpg", quality=95)
    for _ in range(2):  # decoded, then read back from the cache
        decoded.cache_clear()
        dataset = get_dataset(str(root))
        images, labels = dataset.load("train")
        assert dataset.channels == 3 and images.shape[1:] == (3, 28, 28)
    images, _, _, _ = decoded(root.resolve(), 28)
    red = (images[:, 0].float().mean((1, 2)) > 200) & (images[:, 1].float().mean((1, 2)) < 50)
    assert red.sum() == 1  # the photo kept its colour; the scans are gray in three channels
    (root / "letters" / "photo.jpg").unlink()
    decoded.cache_clear(), check_layout.cache_clear()  # as a new command would
    assert get_dataset(str(root)).channels == 1


def test_16_bit_and_float_scans_are_read_at_their_gray_levels(tmp_path, monkeypatch):
    """A 16-bit scan of a third of its range (a microscope's, an X-ray's) was read all white, and
    a float image of 0-1 black: PIL clips their values to 0-255 when it converts them."""
    from distill.datasets.folder import decoded
    from distill.predict import load_image

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "scans"
    for name, level in (("dim", 1 / 3), ("bright", 2 / 3)):
        (root / name).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(np.full((32, 32), round(level * 65535), np.uint16)).save(
                root / name / f"{k}.png")
            Image.fromarray(np.full((32, 32), level, np.float32)).save(root / name / f"{k}.tif")
    for path in (root / "dim" / "0.png", root / "bright" / "0.tif"):
        with Image.open(path) as image:
            assert image.mode in ("I;16", "I", "F")  # as PIL reads them
    dataset = get_dataset(str(root))
    images, labels, _, _ = decoded(root.resolve(), 28)
    assert dataset.channels == 1
    assert sorted(images.float().mean((1, 2)).unique().tolist()) == [85.0, 170.0]
    assert labels[images[:, 0, 0] == 85].unique().tolist() == [dataset.classes.index("dim")]
    # distill predict and the demo read such a file as the folder's images were.
    assert load_image(root / "dim" / "0.png")[0, 0].tolist() == [85, 85, 85, 255]
    assert load_image(root / "bright" / "0.tif")[0, 0].tolist() == [170, 170, 170, 255]


def test_what_a_mac_zip_or_a_nas_keeps_beside_the_pictures_is_no_class_and_no_image(
        data_dir, tmp_path, monkeypatch):
    """A zip made on a Mac holds __MACOSX/ (refused as a class of no image), a Synology NAS
    keeps thumbnails in @eaDir/ folders, and hidden folders hold other copies: none of them is
    a class or a training image. A camera's upper-case extensions are images."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "digits", data_dir, per_class=6, classes=(0, 1))
    (root / "digit-0" / "broken.png").unlink()
    (root / "digit-1" / "0.png").rename(root / "digit-1" / "IMG_0001.PNG")
    for copy in ("__MACOSX/digit-0/._0.png", "digit-0/@eaDir/0.png/SYNOPHOTO_THUMB_S.png",
                 "digit-1/.thumbnails/1.png", "digit-1/._2.png"):
        (root / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "digit-0" / "0.png", root / copy)
    dataset = get_dataset(str(root))
    assert dataset.classes == ("digit-0", "digit-1")
    assert len(dataset.load("train")[1]) + len(dataset.load("test")[1]) == 12


def test_a_photo_stored_sideways_with_an_orientation_tag_is_read_upright(tmp_path, monkeypatch):
    # A phone keeps a photo taken upright as sideways pixels and an EXIF tag saying so.
    from distill.datasets.folder import decoded
    from distill.predict import load_image

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    upright = np.zeros((40, 40), np.uint8)
    upright[:20] = 255  # light above, dark below
    for name in ("up", "down"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.fromarray(upright).save(tmp_path / "photos" / name / "plain.png")
    sideways = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    sideways.save(tmp_path / "photos" / "up" / "phone.jpg", exif=exif, quality=100)
    assert np.abs(load_image(tmp_path / "photos" / "up" / "phone.jpg")[..., 0].astype(int)
                  - upright).max() < 8
    # A big JPEG decodes at a fraction of its scale, as predict decodes it for the folder's network.
    from distill.predict import prepare

    photo = Image.fromarray(upright).resize((800, 600), Image.BICUBIC)
    photo.save(tmp_path / "photos" / "down" / "big.jpg", quality=95)
    images = decoded((tmp_path / "photos").resolve(), 28)[0].float()
    dataset = get_dataset(str(tmp_path / "photos"))
    picture = load_image(tmp_path / "photos" / "down" / "big.jpg", dataset)
    from distill.pictures import decode_file

    in_folder = torch.tensor(decode_file((str(tmp_path / "photos" / "down" / "big.jpg"), 28, 1)))
    assert torch.equal(prepare(picture, dataset).image * 255, in_folder.float())
    assert (images[:, :10].mean((1, 2)) > 200).all()  # (N, 28, 28): each one light on top
    assert (images[:, -10:].mean((1, 2)) < 50).all()


def test_a_phones_photos_are_read_and_a_huge_png_skipped_saying_why(tmp_path, monkeypatch):
    # 24 megapixels, over the 16.7 distill once decoded: both were skipped as "not readable
    # images" and refused by predict. An iPhone's HEIC was not readable at all.
    from distill.datasets.folder import decoded
    from distill.pictures import read_heic
    from distill.predict import load_image

    from .test_hostile import png_header

    read_heic()  # for PIL to write one

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    big = Image.new("L", (6000, 4000), 255)
    big.paste(0, (0, 2000, 6000, 4000))  # dark below
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("L", (40, 40), 128).save(root / name / "small.png")
    big.save(root / "a" / "camera.jpg", quality=90)
    big.resize((600, 400)).save(root / "b" / "iphone.heic", thumbnails=[64])  # as a phone does
    (root / "b" / "huge.png").write_bytes(png_header(10_000, 10_000))  # claims 100 megapixels
    with pytest.warns(UserWarning, match=r"1 file has over 67,108,864 pixels and was skipped in "
                                         r".*huge.png\): make such files smaller"):
        images, labels, _, _ = decoded(root.resolve(), 28)
    assert sorted(labels.tolist()) == [0, 0, 1, 1]  # camera.jpg, small.png; iphone.heic, small.png
    upright = (images[:, :10].float().mean((1, 2)) > 200) & (images[:, -10:].float().mean((1, 2)) < 50)
    assert sorted(labels[upright].tolist()) == [0, 1]  # the camera's photo and the iPhone's
    assert load_image(root / "a" / "camera.jpg").shape == (4000, 6000, 4)
    # The HEIC is read from its thumbnail (64x42, over 28 a side), as the JPEG at 1/8 of its scale.
    from distill.pictures import draft, reading_pictures

    with reading_pictures(), Image.open(root / "b" / "iphone.heic") as heic:
        draft(heic, 28, 1)
        assert heic.size == (64, 42)
    # Over the limit, a JPEG is read at a fraction of its scale rather than refused.
    Image.new("L", (9000, 8000), 255).save(tmp_path / "panorama.jpg", quality=50)
    assert load_image(tmp_path / "panorama.jpg").shape == (4000, 4500, 4)


def test_photos_decoded_at_the_default_size_are_said_to_keep_little(data_dir, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (200, 150 + k), (40 * k, 90, 200)).save(root / name / f"{k}.jpg")
    said = ("Its pictures are about 151 pixels on their shorter side: --image-size 64 keeps more "
            "of them, for about 5 times the compute per image.")
    assert get_dataset(str(root)).summary().endswith(said)
    assert "Its pictures" not in get_dataset(str(root), 64).summary()  # a size was chosen
    with pytest.warns(UserWarning, match="1 file"):  # digits of 28 and 40 pixels: nothing to say
        assert "Its pictures" not in get_dataset(str(write_folder(tmp_path / "d", data_dir))).summary()


def test_a_folder_decodes_the_same_in_worker_processes(data_dir, tmp_path):
    # A folder of photos is decoded by every core (spawned processes): the same tensors, and the
    # same files skipped, as in one process.
    from distill.datasets.folder import TRAIN, check_layout, decode_entries

    root = write_folder(tmp_path / "digits", data_dir, per_class=10).resolve()
    train = check_layout(root).files[TRAIN]
    entries = [(path, label, TRAIN) for label, paths in enumerate(train.values()) for path in paths]
    alone, together = (decode_entries(root, 28, 3, entries, True, processes=n) for n in (0, 2))
    assert all(torch.equal(alone[key], together[key]) for key in ("images", "labels", "splits"))
    assert alone["skipped"] == together["skipped"] == [str(root / "digit-0" / "broken.png")]
    # A worker imports distill.pictures alone, without torch: it starts in a fraction of a second.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, distill.pictures; "
                           "print(sorted({'torch', 'distill.datasets'} & set(sys.modules)))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    # Nor the program's main module: a user's script without `if __name__ == "__main__":` would
    # run again in each worker, which multiprocessing ended with a traceback apiece.
    script = tmp_path / "mine.py"
    script.write_text(
        "from pathlib import Path\n"
        "from distill.datasets.folder import TRAIN, check_layout, decode_entries\n"
        f"root = Path({str(root)!r})\n"
        "files = check_layout(root).files[TRAIN]\n"
        "entries = [(p, label, TRAIN) for label, ps in enumerate(files.values()) for p in ps]\n"
        "print(decode_entries(root, 28, 3, entries, True, processes=2)['labels'].tolist())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.strip() == str(alone["labels"].tolist())


@pytest.mark.parametrize("seed", range(5))
def test_a_folders_images_are_put_in_split_order_within_their_own_array(seed):
    # Decoding orders the images train, validation, test and drops the unreadable ones, in the
    # decoded array itself: numpy's indexing would hold the folder twice.
    from distill.datasets.folder import rows_in_place

    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    kept = sorted(rng.choice(50, size=int(rng.integers(1, 51)), replace=False).tolist())
    order = rng.permutation(len(kept)).tolist()
    expected = array[kept][order]
    moved = rows_in_place(array, kept, order)
    assert np.shares_memory(moved, array) and np.array_equal(moved, expected)


def test_test_images_that_are_copies_of_training_images_are_counted(data_dir, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "exported"  # as some exports make them: test/ holds copies of train/ images
    write_folder(root / "train", data_dir, per_class=6), write_folder(root / "test", data_dir,
                                                                      per_class=3)
    Image.fromarray(np.full((28, 28), 77, np.uint8)).save(root / "test" / "digit-1" / "0.png")
    with pytest.warns(UserWarning) as said:
        get_dataset(str(root))
    assert (f"8 of the 9 test images of {root.resolve()} are, pixel for pixel at 28x28, also "
            "among its training or validation images (test/digit-0/0.png is train/digit-0/0.png, "
            "...)") in " ".join(str(w.message) for w in said)
    with pytest.warns(UserWarning) as said:  # MNIST's own digits, no copy among them
        get_dataset(str(write_folder(tmp_path / "plain", data_dir)))
    assert not [w for w in said if "pixel for pixel" in str(w.message)]


def test_training_images_are_found_under_another_path_of_their_folder(data_dir, tmp_path):
    from distill.datasets.folder import training_images_among

    photos = tmp_path / "photos"
    write_folder(photos / "train", data_dir, per_class=2), write_folder(photos / "test", data_dir,
                                                                        per_class=2)
    assert training_images_among(photos, photos / "train", whole=True)
    assert training_images_among(photos, photos / "train" / "more", whole=False)
    assert training_images_among(photos, photos / "test", whole=True) is None
    assert training_images_among(photos, photos, whole=True) is None  # its own: its test split
    # A network of the train/ tree alone held its test images out of it: the test/ tree is new
    # to it, but the whole folder holds its training images.
    assert training_images_among(photos / "train", photos, whole=True) == f"{photos} holds {photos / 'train'}"
    assert training_images_among(photos / "train", photos, whole=False) is None
    assert training_images_among(photos, tmp_path / "elsewhere", whole=True) is None


def test_a_val_tree_validates_and_a_train_tree_alone_holds_out_its_test_images(data_dir,
                                                                                tmp_path):
    # ImageNet's layout, train/ and val/: it was read as two classes, "train" and "val".
    from distill.data import validation_split
    from distill.datasets.folder import check_layout, decoded

    def changed() -> None:
        decoded.cache_clear(), check_layout.cache_clear()  # as the next command would

    root = tmp_path / "imagenet-style"
    write_folder(root / "train", data_dir, per_class=12)
    write_folder(root / "val", data_dir, per_class=4)
    with pytest.warns(UserWarning, match="2 files are not readable images"):
        dataset = get_dataset(str(root))
    assert dataset.classes == ("digit-0", "digit-1", "digit-7")
    assert dataset.validation_tree == "val" and dataset.validation_size == 12
    # The validation images are val/'s, in the training split's last places; the test images are
    # held out of train/ alone (2 of each class's 12), none of val/'s.
    images, labels = dataset.load("train")
    trained, validated = dataset.split_indices(len(images))
    assert len(images) == 30 + 12 and validated.tolist() == list(range(30, 42))
    assert torch.equal(validation_split(dataset=dataset)[0], images[-12:])
    assert torch.bincount(dataset.load("test")[1]).tolist() == [2, 2, 2]
    assert "30 training images, 12 validation images (its val/ tree) and 6 test images (held " \
           "out of train/ at random, the same on every run)" in dataset.summary()
    # Roboflow's train/, valid/ and test/ (in any case); train/ alone holds out as a single tree.
    write_folder(root / "Test", data_dir, per_class=3)
    (root / "val").rename(root / "valid")
    changed()
    dataset = get_dataset(str(root))
    assert (dataset.validation_tree, len(dataset.load("test")[1])) == ("valid", 9)
    assert "(its Test/ tree)" in dataset.summary()
    shutil.rmtree(root / "valid"), shutil.rmtree(root / "Test")
    changed()
    dataset = get_dataset(str(root))
    assert (dataset.classes, dataset.validation_tree) == (("digit-0", "digit-1", "digit-7"), "")
    # A class may still be called train, among others (bus/, car/, train/).
    vehicles = write_folder(tmp_path / "vehicles", data_dir, per_class=4, classes=(0, 1))
    (vehicles / "digit-1").rename(vehicles / "train")
    assert get_dataset(str(vehicles)).classes == ("digit-0", "train")


def test_a_teacher_of_another_dataset_is_refused(teacher_run, fashion_dir, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(fashion_dir))
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "tiny", "--dataset", "fashion-mnist", "--teacher",
              str(teacher_run), "--runs", str(tmp_path / "runs"), *QUICK])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 1 and (
        f"The teacher {teacher_run} was trained on mnist, and the recipe tiny distills on "
        "fashion-mnist: give --dataset mnist to distill on the teacher's, or a teacher of "
        "fashion-mnist (distill teacher --dataset fashion-mnist)." in out)
    assert not (tmp_path / "runs" / "student-tiny").exists()
    # Two teachers of two datasets: no --dataset suits both, so none is offered.
    fashion = REPO / "models" / "digitnet.fashion_mnist"
    with pytest.raises(SystemExit):
        main(["student", "--recipe", "tiny", "--teacher", str(teacher_run), "--teacher",
              str(fashion), "--runs", str(tmp_path / "runs"), *QUICK])
    assert (f"These teachers were trained on different images: {teacher_run} (mnist at 28x28), "
            f"{fashion} (fashion-mnist at 28x28). The mean of their logits needs teachers of one "
            "dataset and image size.") in " ".join(capsys.readouterr().out.split())



def test_another_dataset_brings_its_own_augmentation_and_says_so(fashion_dir, tmp_path, capsys,
                                                                  monkeypatch):
    from distill.files import MODELS_DIR

    monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(fashion_dir))
    main(["student", "--recipe", "tiny", "--dataset", "fashion-mnist", "--no-twin", "--runs",
          str(tmp_path / "runs"), *QUICK])
    out = " ".join(capsys.readouterr().out.split())
    # With no teacher of its own in the runs folder, the dataset's release teaches (not MNIST's).
    assert (f"distilling the released teacher {MODELS_DIR / 'digitnet.fashion_mnist'}"
            in out)
    # The recipe's file says 7.5-degree rotations, made for digits: the clothes' own are used.
    assert ("Recipe tiny's augmentation is for mnist: on fashion-mnist it trains with that "
            "dataset's own (mirrored, shifts up to 10%)") in out
    config = json.loads((tmp_path / "runs" / "student-tiny" / "report.json").read_text())["config"]
    assert Augment(**config["augment"]) == get_dataset("fashion-mnist").augment
    # tiny's MNIST settings lose to their twin on clothes: the recipe measured there is named,
    assert ("Recipe tiny's settings were chosen on mnist; tiny-fashion-mnist holds those measured "
            "on fashion-mnist (--recipe tiny-fashion-mnist).") in out
    # and with no recipe named it is the one distilled, as the teacher takes its dataset's own.
    main(["student", "--dataset", "fashion-mnist", "--no-twin", "--runs", str(tmp_path / "runs"),
          *QUICK])
    out = " ".join(capsys.readouterr().out.split())
    assert ("fashion-mnist has a tiny recipe of its own: tiny-fashion-mnist (30 epochs; --recipe "
            "tiny for MNIST's).") in out and "Recipe tiny's" not in out
    report = json.loads((tmp_path / "runs" / "student-tiny-fashion-mnist" / "report.json").read_text())
    assert report["config"]["augment"] == config["augment"]


def test_recipes_of_two_datasets_are_distilled_one_dataset_at_a_time(tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        main(["student", "--recipe", "micro", "--recipe", "tiny-fashion-mnist", "--runs", str(runs),
              *QUICK])
    assert exit_.value.code == 1
    assert ("micro is a recipe for mnist and tiny-fashion-mnist for fashion-mnist: distill one "
            "dataset at a time, or give --dataset to train both on one.") in " ".join(
                capsys.readouterr().out.split())
    assert not runs.exists()

def test_a_teacher_for_fashion_mnist_trains_with_that_datasets_own_recipe(fashion_dir, tmp_path,
                                                                           capsys, monkeypatch):
    # MNIST's recipe (10 epochs) left the clothes' teacher two points short of their own.
    from distill.recipes import load_recipe

    epochs = load_recipe("teacher-fashion-mnist").train_config().epochs
    monkeypatch.setenv("DISTILL_FASHION_MNIST_DIR", str(fashion_dir))
    main(["teacher", "--dataset", "fashion-mnist", "--out", str(tmp_path / "t"), *QUICK])
    assert (f"fashion-mnist has a teacher recipe of its own: teacher-fashion-mnist ({epochs} epochs; "
            "--recipe teacher for MNIST's)") in " ".join(capsys.readouterr().out.split())
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["recipe"] == "teacher-fashion-mnist" and report["config"]["augment"]["erasing"]
    main(["teacher", "--recipe", "teacher", "--dataset", "fashion-mnist", "--out",
          str(tmp_path / "m"), *QUICK])
    out = " ".join(capsys.readouterr().out.split())
    assert "of its own" not in out
    assert ("Recipe teacher's settings were chosen on mnist; teacher-fashion-mnist holds those "
            "measured on fashion-mnist (--recipe teacher-fashion-mnist).") in out
    assert json.loads((tmp_path / "m" / "report.json").read_text())["recipe"] == "teacher"


@pytest.mark.parametrize("layout, message", [
    ("flat", "has no class subfolders"),
    ("empty", "holds no image"),
    ("mismatch", "different classes"),
    ("one", "has one class folder"),
    ("single", "holds one image, which would be held out"),
    ("unreadable class", "digit-7: none of its 2 files is a readable image (Thumbs.db, ...): give "
                         "the class images, or remove its folder."),
    ("one readable", "digit-7: one of its files is a readable image, which would be held out"),
    ("memory", "over a third of this machine's 0 GiB of memory: give a smaller --image-size"),
    ("two validation trees", "has both val/ and validation/: keep one of them"),
    ("a stray folder", "holds test/, train/ and extra/: its subfolders are either"),
    ("another class in val/", "train/ and val/ have different classes"),
    ("no train/", "holds test/ and val/ but no train/ tree"),
    ("runs inside", "the class folder runs/ holds distill's runs (runs/digits/teacher/), not "
                    "images of a class: move it out of"),
    ("escape", "the class folder 'red\\x1b[31m' has a control character in its name: rename it."),
])
def test_a_bad_folder_is_one_line(data_dir, tmp_path, monkeypatch, layout, message):
    root = tmp_path / "data"
    root.mkdir()
    if layout == "flat":
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "a.png")
    elif layout == "empty":
        write_folder(root, data_dir, per_class=2)
        (root / "digit-9").mkdir()
    elif layout == "one":
        write_folder(root, data_dir, per_class=2, classes=(0,))
    elif layout == "single":
        write_folder(root, data_dir, per_class=1)
    elif layout in ("unreadable class", "one readable"):  # as Windows leaves a folder
        write_folder(root, data_dir, per_class=2, classes=(0, 1))
        (root / "digit-7").mkdir()
        (root / "digit-7" / "Thumbs.db").write_bytes(b"\0" * 64)
        if layout == "unreadable class":
            (root / "digit-7" / "notes.txt").write_text("taken on Sunday")
        else:
            shutil.copy(root / "digit-0" / "0.png", root / "digit-7")
    elif layout == "memory":  # a machine of 40 kB: 72 images of 28x28 would not fit in a third
        write_folder(root, data_dir, per_class=24)
        monkeypatch.setattr("distill.datasets.folder.os.sysconf",
                            {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 10}.get)
    elif layout == "escape":  # printed as it is, the name would recolour the terminal
        write_folder(root, data_dir, per_class=2)
        (root / "digit-7").rename(root / "red\x1b[31m")
    elif layout == "runs inside":  # `cd digits; distill teacher --dataset .`, before it was refused
        write_folder(root, data_dir, per_class=2)
        (root / "runs" / "digits" / "teacher").mkdir(parents=True)
        (root / "runs" / "digits" / "teacher" / ".distill-run").write_text("")
        shutil.copy(root / "digit-0" / "0.png", root / "runs" / "digits" / "teacher" / "curves.png")
    elif layout == "mismatch":
        write_folder(root / "train", data_dir, per_class=2)
        write_folder(root / "test", data_dir, per_class=2, classes=(0, 1, 8))
    elif layout == "no train/":
        write_folder(root / "test", data_dir, per_class=2)
        write_folder(root / "val", data_dir, per_class=2)
    else:
        write_folder(root / "train", data_dir, per_class=2)
        second = {"two validation trees": "validation", "a stray folder": "test"}.get(layout)
        write_folder(root / "val", data_dir, per_class=2, classes=(0, 1, 7 + (second is None)))
        if second:
            (root / "val").rename(root / second)
            write_folder(root / {"validation": "val", "test": "extra"}[second], data_dir, per_class=2)
    with pytest.raises(DistillError, match=re.escape(message)):
        get_dataset(str(root))
    shutil.rmtree(root)


def test_a_two_class_folder_is_summed_up_by_its_augmented_top_1(data_dir, tmp_path, capsys,
                                                                 monkeypatch):
    """Cats and dogs: the top-2 of two classes is always 100%, which says nothing."""
    root = write_folder(tmp_path / "digits", data_dir, per_class=24, classes=(0, 1))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    main(["teacher", "--dataset", str(root), "--out", str(tmp_path / "teacher"), "--batch-size",
          "16", *QUICK])
    said = " ".join(capsys.readouterr().out.split())
    report = json.loads((tmp_path / "teacher" / "report.json").read_text())["evaluation"]
    assert report["augmented_test"]["top2"] == 1.0
    top1 = f"{100 * report['augmented_test']['top1']:.2f}%"
    assert f"augmented test top-1 {top1};" in said and "top-2" not in said


def test_a_run_of_another_size_or_folder_in_its_runs_folder_is_said_with_one_that_keeps_both(
        data_dir, tmp_path, capsys, monkeypatch):
    root = write_folder(tmp_path / "digits", data_dir, per_class=60)  # tiny's batch of 128 fits
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    main(["teacher", "--dataset", str(root), "--image-size", "20", *QUICK])
    main(["student", "--recipe", "tiny", "--dataset", str(root), "--no-twin", *QUICK])
    capsys.readouterr()
    for command in (["teacher"], ["student", "--recipe", "tiny", "--no-twin"]):
        with pytest.raises(SystemExit):
            main([*command, "--dataset", str(root), "--image-size", "24", *QUICK])
        said = " ".join(capsys.readouterr().out.split())
        run = "teacher" if command == ["teacher"] else "student-tiny"
        assert (f"runs/digits/{run} already holds a finished run on 20x20 images. Pass "
                "--overwrite to replace it, or keep both: another folder for these runs (--out "
                "for a teacher, --runs for students), e.g. runs/digits-24." in said), said
    # --resume would have kept the 20x20 run as if it were the 24x24 one asked for.
    with pytest.raises(SystemExit):
        main(["teacher", "--dataset", str(root), "--image-size", "24", "--resume", *QUICK])
    assert "runs/digits/teacher already holds a finished run on 20x20 images." in " ".join(
        capsys.readouterr().out.split())
    # Another folder of the same name shares runs/digits too: its run is said to be another's.
    elsewhere = write_folder(tmp_path / "b" / "digits", data_dir, per_class=60, classes=(1, 7))
    with pytest.raises(SystemExit):
        main(["teacher", "--dataset", str(elsewhere), "--image-size", "20", *QUICK])
    assert (f"runs/digits/teacher already holds a finished run of folder:{root.resolve()}. Pass "
            "--overwrite to replace it, or keep both: another folder for these runs (--out for a "
            "teacher, --runs for students), e.g. runs/digits-b." in " ".join(
                capsys.readouterr().out.split()))
    # At the teacher's size, as a student takes it when none is given: the plain clash.
    with pytest.raises(SystemExit):
        main(["student", "--recipe", "tiny", "--dataset", str(root), "--no-twin", *QUICK])
    assert "already holds a finished run. Pass --overwrite" in " ".join(
        capsys.readouterr().out.split())
    # Both kept, as the message says: the report puts each size in a table of its own.
    main(["teacher", "--dataset", str(root), "--image-size", "24", "--out",
          "runs/digits-24/teacher", *QUICK])
    capsys.readouterr()
    main(["report", "runs", "--no-measure"])
    said = " ".join(capsys.readouterr().out.split())
    for size in (20, 24):
        assert f"Teacher and students on folder:{root.resolve()} at {size}x{size}" in said
        assert (tmp_path / "runs" / f"accuracy_vs_size-digits-{size}.png").is_file()


def test_a_folder_of_pictures_and_data_dir_are_not_mistaken_for_each_other(
        data_dir, tmp_path, capsys, monkeypatch):
    """--data-dir photos meant --dataset photos: nothing is downloaded into the photos; and
    --data-dir beside a folder dataset would be ignored."""
    root = write_folder(tmp_path / "digits", data_dir, per_class=6)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("distill.datasets.idx.download_idx", lambda *a: pytest.fail("downloaded"))
    before = sorted(root.rglob("*"))
    with pytest.raises(SystemExit):
        main(["teacher", "--data-dir", str(root), "--out", str(tmp_path / "run"), *QUICK])
    said = " ".join(capsys.readouterr().out.split())
    assert (f"{root} holds folders of pictures (digit-0/, ...), not the mnist files: to train on "
            f"them, give --dataset {root} (--data-dir is for mnist's files)." in said)
    assert sorted(root.rglob("*")) == before
    for command in (["teacher", "--out", str(tmp_path / "run")],
                    ["student", "--recipe", "tiny", "--runs", str(tmp_path / "runs")],
                    ["evaluate", str(REPO / "models" / "convnet_tiny")]):
        with pytest.raises(SystemExit):
            main([*command, "--dataset", str(root), "--data-dir", str(data_dir), *(
                QUICK if command[0] != "evaluate" else [])])
        said = " ".join(capsys.readouterr().out.split())
        assert (f"--data-dir is for the files of mnist and fashion-mnist; a folder of images "
                f"({root.resolve()}) is named by --dataset alone." in said), said
    assert not (tmp_path / "cache").exists()  # refused before decoding
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_runs_are_not_written_inside_the_folder_of_images(data_dir, tmp_path, capsys,
                                                          monkeypatch):
    # `cd photos; distill teacher --dataset .` wrote runs/ among the class folders: the next
    # command read it as a class of PNG plots, and advised training the teacher again on it.
    root = write_folder(tmp_path / "digits", data_dir, per_class=6)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(root)
    for command, option in ((["teacher"], "--out"), (["student", "--recipe", "tiny"], "--runs")):
        with pytest.raises(SystemExit):
            main([*command, "--dataset", ".", *QUICK])
        said = " ".join(capsys.readouterr().out.split())
        assert (f"is inside {root.resolve()}, the folder of images: its plots would be read as a "
                f"class of it. Run distill from another folder, or give {option} outside it."
                in said), said
    assert sorted(p.name for p in root.iterdir()) == ["digit-0", "digit-1", "digit-7"]
    assert not (tmp_path / "cache").exists()  # refused before decoding


def test_a_student_of_a_folder_without_a_teacher_says_how_to_train_one(data_dir, tmp_path, capsys,
                                                                       monkeypatch):
    root = write_folder(tmp_path / "digits", data_dir, per_class=6)
    (root / "digit-0" / "broken.png").unlink()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(SystemExit):
        main(["student", "--recipe", "tiny", "--dataset", str(root), "--image-size", "20",
              "--runs", str(tmp_path / "runs"), *QUICK])
    said = capsys.readouterr()
    assert (f"none released for folder:{root}: train one first (distill teacher --dataset {root} "
            "--image-size 20), or give --teacher.") in " ".join(said.out.split())
    # Refused before the folder's decoding (minutes for a big one), as are a teacher that is not
    # there and a run folder distill did not make.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    for command, error in ((["student", "--recipe", "tiny", "--teacher", str(tmp_path / "none")],
                            "No teacher at"), (["teacher", "--out", str(tmp_path / "mine")],
                                               "is a folder distill did not make")):
        with pytest.raises(SystemExit):
            main([*command, "--dataset", str(root), *QUICK])
        again = capsys.readouterr()
        assert error in again.out and "Decoding" not in said.err + again.err
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing kept


def test_a_folder_of_two_classes_trains_to_the_end(data_dir, tmp_path):
    # Two classes make two possible mistakes: the report's five most confused pairs must fit.
    root = write_folder(tmp_path / "two", data_dir, per_class=12, classes=(0, 1))
    with pytest.warns(UserWarning, match="1 file"):
        main(["teacher", "--dataset", str(root), "--out", str(tmp_path / "t"), "--batch-size",
              "8", *QUICK])
    confused = json.loads((tmp_path / "t" / "report.json").read_text())["evaluation"]
    assert len(confused["most_confused"]) <= 2 and confused["test"]["top2"] == 1.0
    from distill.demo import classify, load_demo_models

    models, dataset = load_demo_models([tmp_path / "t"])
    picture = np.asarray(Image.open(root / "digit-1" / "0.png").convert("RGBA"))
    status, (answer,), _ = classify(models, dataset, picture, is_photo=True)
    assert status.startswith("Each model's two most likely classes") and len(answer) == 2


def test_a_batch_larger_than_a_folder_is_one_line_before_any_teacher_pass(data_dir, tmp_path,
                                                                         teacher_run, capsys):
    root = write_folder(tmp_path / "digits", data_dir, per_class=10)
    with pytest.raises(SystemExit):
        main(["teacher", "--dataset", str(root), "--out", str(tmp_path / "t"), *QUICK])
    assert "larger than the" in " ".join(capsys.readouterr().out.split())


def test_report_finds_another_datasets_runs_where_distill_teacher_put_them(teacher_run, tmp_path,
                                                                          capsys):
    # `distill teacher --dataset fashion-mnist` writes runs/fashion-mnist/teacher; a bare
    # `distill report` (runs/) must show it, not say there are no runs.
    runs = tmp_path / "runs"
    shutil.copytree(teacher_run, runs / "fashion-mnist" / "teacher")
    main(["report", str(runs), "--no-measure"])
    assert "Teacher and students on mnist" in capsys.readouterr().out


def test_the_walkthroughs_folder_script_writes_a_folder_distill_reads(fashion_dir, tmp_path):
    import subprocess
    import sys

    from .conftest import REPO

    out = tmp_path / "garments"
    subprocess.run([sys.executable, str(REPO / "docs" / "experiments" / "write_folder.py"),
                    "--out", str(out), "--per-class", "3", "--data-dir", str(fashion_dir)],
                   check=True, capture_output=True)
    dataset = get_dataset(str(out))
    assert dataset.classes == ("coat", "pullover", "shirt", "tshirt") and dataset.channels == 3


def test_a_folder_changed_since_its_teacher_is_refused_or_said(data_dir, tmp_path, capsys):
    root = write_folder(tmp_path / "digits", data_dir, per_class=60)  # tiny's batch of 128 fits
    (root / "digit-0" / "broken.png").unlink()
    main(["teacher", "--dataset", str(root), "--out", str(tmp_path / "runs" / "teacher"), *QUICK])
    student = ["student", "--recipe", "tiny", "--dataset", str(root), "--runs",
               str(tmp_path / "runs"), "--no-twin", *QUICK]
    # A class added since: the teacher cannot answer for it (KL over 3 and 4 classes failed with
    # a traceback).
    from distill.datasets.folder import check_layout, decoded

    shutil.copytree(root / "digit-7", root / "digit-9")
    decoded.cache_clear(), check_layout.cache_clear()  # as the next command would
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(student)
    assert (f"answers for 3 classes (digit-0, digit-1, digit-7), and {root.resolve()} now has "
            "digit-0, digit-1, digit-7, digit-9: train the teacher again") in " ".join(
        capsys.readouterr().out.split())
    assert not (tmp_path / "runs" / "student-tiny").exists()
    # Other images changed: the teacher reads them normalized as its training images were, and
    # the command says so.
    shutil.rmtree(root / "digit-9")
    for image in (root / "digit-1").glob("*.png"):
        Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image)
    decoded.cache_clear(), check_layout.cache_clear()
    main(student)
    assert "has changed since" in capsys.readouterr().out
    # Every image now grayscale: a teacher of RGB images cannot read them.
    for image in root.glob("*/*.png"):
        Image.open(image).convert("L").save(image)
    decoded.cache_clear(), check_layout.cache_clear()
    with pytest.raises(SystemExit):
        main([*student, "--overwrite"])
    assert "reads RGB images, and" in " ".join(capsys.readouterr().out.split())


def test_a_teacher_reads_a_changed_folder_normalized_as_it_was_trained():
    from dataclasses import replace

    from distill.data import normalize, to_unit
    from distill.datasets.folder import FolderDataset
    from distill.distillation import Renormalized
    from distill.nets import ConvNet

    taught = FolderDataset(name="folder:/x", classes=("a", "b"), mean=(0.1, 0.2, 0.3),
                           std=(0.3, 0.25, 0.2), channels=3)
    now = replace(taught, mean=(0.15, 0.2, 0.25), std=(0.35, 0.2, 0.2))
    teacher = ConvNet(num_classes=2, in_chans=3).eval()
    images = to_unit(torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8))
    renormalized = Renormalized.between(teacher, now, taught)
    torch.testing.assert_close(renormalized(normalize(images, now)),
                               teacher(normalize(images, taught)))
    assert Renormalized.between(teacher, taught, taught) is teacher  # cache keys stay as they were
