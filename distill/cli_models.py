"""`distill evaluate`, `export`, `predict`, `publish` and `demo`: the commands that use trained
networks (run folders, weights files, releases), registered on the `distill` command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from distill.cli import DataDir, TestImages, app, console, shipped_or_given_option
from distill.errors import DistillError
from distill.files import install_command, shipped_or_given, shipped_or_given_all

if TYPE_CHECKING:
    import torch


@app.command()
def evaluate(
    weights: Annotated[list[Path], typer.Argument(
        help="Run folders or weights.safetensors files (e.g. models/convnet_tiny); networks of "
             "different datasets are scored apart, a table each.",
        callback=shipped_or_given_all)],
    teacher: Annotated[Path | None, typer.Option(
        help="Also say how often each network of the teacher's dataset agrees with it (run "
             "folder or weights file).", show_default=False,
        callback=shipped_or_given_option)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
    ensemble: Annotated[bool, typer.Option(
        "--ensemble", help="Also score the networks as one: the mean of their logits, as "
                           "`distill student` distills from several --teacher.")] = False,
    data_dir: DataDir = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="The dataset to score on (default: the one each network was trained "
                          "on, as its weights file says).", show_default=False)] = None,
    test_images: TestImages = None,
    split: Annotated[str | None, typer.Option(
        "--split", help="What to score on: 'test'; 'validation', the training images every run "
                        "holds out and keeps its epoch by (compare networks there to choose one, "
                        "a teacher, an ensemble, without touching the test set); or 'all' the "
                        "images of a --dataset the networks were not trained on (its default).",
        show_default=False)] = None,
) -> None:
    """Score networks on their test set (or validation images) and its heavily augmented copy."""
    import json

    from distill.export import dataset_of, image_size_of, load_model
    from distill.metrics import SPLITS
    from distill.pipeline import load_teacher
    from distill.run_report import data_shown

    if split is not None and split not in SPLITS:
        raise DistillError(f"--split {split!r}: use one of {', '.join(SPLITS)}.")
    if ensemble and len(weights) < 2:
        raise DistillError("--ensemble needs at least two networks to average.")
    # Every network (and the teacher) is read first: a wrong path is named before any data is
    # read, a folder's decoding included.
    loaded = [load_model(path) for path in weights]
    teacher_model = load_teacher(teacher) if teacher is not None else None
    groups: dict[tuple[str, int], list[int]] = {}  # the networks of each dataset and image size
    for index, path in enumerate(weights):
        groups.setdefault((dataset or dataset_of(path), image_size_of(path)), []).append(index)
    if len(groups) > 1:
        listed = "; ".join(f"{name} at {size}x{size}: {', '.join(as_asked(weights[i]) for i in group)}"
                           for (name, size), group in groups.items())
        if dataset or ensemble or data_dir is not None:
            why = ("--dataset scores them on one" if dataset else "--ensemble averages them"
                   if ensemble else "--data-dir names one dataset's files")
            raise DistillError(f"These networks were trained on different datasets or image "
                               f"sizes ({listed}), and {why}: evaluate each dataset's networks "
                               "apart.")
    taught = (dataset_of(teacher), image_size_of(teacher)) if teacher is not None else None
    if teacher is not None and len(groups) > 1 and taught not in groups:
        raise DistillError(f"{as_asked(teacher)} was trained on {taught[0]} at {taught[1]}x{taught[1]}, and "
                           f"none of these networks was ({listed}): give a teacher of theirs.")
    how = Scoring(dataset is not None, split, data_dir, test_images, ensemble, as_json)
    results = []
    for (name, size), group in groups.items():
        agreement = teacher is not None and (len(groups) == 1 or (name, size) == taught)
        if teacher is not None and not agreement and not as_json:
            console.print(f"{as_asked(teacher)} was trained on {data_shown(*taught)}: the networks of "
                          f"{data_shown(name, size)} are scored without its agreement.")
        results += score_group([weights[i] for i in group], [loaded[i] for i in group], name,
                               size, teacher if agreement else None,
                               teacher_model if agreement else None, how)
    if as_json:
        print(json.dumps(results, indent=2))


@dataclass(frozen=True)
class Scoring:
    """What `distill evaluate` was asked, the same for each dataset's networks."""

    asked: bool  # --dataset: score on it, not on each network's own
    split: str | None
    data_dir: Path | None
    test_images: int | None
    ensemble: bool
    as_json: bool


def score_group(weights: list[Path], loaded: list, name: str, size: int, teacher: Path | None,
                teacher_model: torch.nn.Module | None, how: Scoring) -> list[dict]:
    """Score networks of one dataset and image size (trained on `name`, or to be scored on it)
    and print their table; return their scorecards."""
    from rich.table import Table

    from distill.data import scored_split
    from distill.datasets import dataset_classes, dataset_name, get_dataset
    from distill.datasets.folder import check_no_data_dir
    from distill.export import (
        check_classes,
        dataset_of,
        read_as_trained,
        trained_dataset,
    )
    from distill.metrics import predict_logits, scorecard
    from distill.report import human, percent
    from distill.run_report import data_shown
    from distill.transfer import WithBias

    # Each network reads the images as it was trained to: with --dataset, its classes are checked
    # and a folder is normalized as that network's own training images (networks of two folders
    # scored on a third each keep their own normalization).
    asked, split, data_dir, test_images = how.asked, how.split, how.data_dir, how.test_images
    name = dataset_name(name, size) if asked else name  # a network's own is named as it was
    check_no_data_dir(name, data_dir)
    unseen = all(dataset_of(path) != name for path in weights)  # e.g. new/photos
    if split == "all" and not unseen:
        raise DistillError(f"--split all would score networks on {name}'s training images too: "
                           "it is for a --dataset they were not trained on.")
    if asked:
        for path in weights:  # before a folder's decoding, which takes minutes
            check_classes(path, name, dataset_classes(name))
            check_unseen(path, name, (split or ("all" if unseen else "test")) == "all")
    named = get_dataset(name, size) if asked else trained_dataset(weights[0])
    readings = [read_as_trained(path, named) if asked else named for path in weights]
    scored_on = readings[0]
    split = split or ("all" if unseen else "test")
    images = scored_split(split, data_dir, scored_on)[0][:test_images]  # bad data fails first
    if unseen:
        warn_trained_among(weights, images, size, name)
    models = [(path, with_reported_bias(path, model, how.as_json), architecture, reading)
              for path, (model, architecture), reading in zip(weights, loaded, readings)]
    if how.ensemble:
        from distill.distillation import Ensemble

        if len({getattr(model, "num_classes", None) for _, model, _, _ in models}) > 1:
            raise DistillError("These networks answer with different numbers of classes: they "
                               "cannot be averaged (--ensemble).")
        if len({(r.mean, r.std) for r in readings}) > 1:
            raise DistillError("These networks were trained on images normalized differently "
                               "(different folders): their logits cannot be averaged on one "
                               "reading of the images (--ensemble).")
        architectures = sorted({architecture for _, _, architecture, _ in models})
        models.append((f"mean of the {len(models)} above", Ensemble([m for _, m, _, _ in models]),
                       f"ensemble ({', '.join(architectures)})", scored_on))
    answers = None
    if teacher_model is not None:
        answers = predict_logits(teacher_model, images,
                                 dataset=read_as_trained(teacher, named,
                                                         f"give a teacher of {name}")).argmax(-1)
    results = []
    with console.status(f"Scoring on the {'' if split == 'all' else split + ' '}images and their "
                        "augmented copy") as status:
        for path, model, architecture, reading in models:
            status.update(f"Scoring {path}")
            results.append({"weights": str(path), "model": architecture,
                            "dataset": scored_on.name,
                            **scorecard(model, data_dir, test_images, answers, reading, split),
                            **({"logit_bias": {scored_on.classes[c]: value
                                               for c, value in model.bias.items()}}
                               if isinstance(model, WithBias) else {})})
    if how.as_json:
        return results
    scored = results[0][f"{split}_images"]
    table = Table(title=f"{data_shown(scored_on.name, size)}, " + (
        f"all {scored:,} images (not the dataset these networks were trained on)" if split == "all" else
        f"{scored:,} {split} images") + (f"; agreement with {as_asked(teacher)}" if teacher else ""))
    columns = ["weights", "model", "params", "FLOPs", "top-1", "top-2", "aug top-1", "aug top-2",
               "ECE", "loss", *(["agree"] if teacher else []), "most confused"]
    for column in columns:
        table.add_column(column, overflow="fold", justify="left" if column in (
            "weights", "model", "most confused") else "right")
    for r in results:
        classes = scored_on.classes
        confused = ", ".join(f"{classes[c['true']]} as {classes[c['predicted']]} ({c['count']})"
                             for c in r["most_confused"][:3])
        table.add_row(as_asked(r["weights"]), r["model"], f"{r['parameters']:,}", human(r["flops"]),
                      percent(r[split]["top1"]), percent(r[split]["top2"]),
                      percent(r[f"augmented_{split}"]["top1"]),
                      percent(r[f"augmented_{split}"]["top2"]),
                      f"{r[split]['ece']:.4f}", f"{r[split]['loss']:.4f}",
                      *([percent(r["teacher_agreement"])] if teacher else []), confused or "-")
    console.print(table)
    return results


def as_asked(path: Path | str) -> str:
    """A path as the user gave it, or, where the CLI found it for them (a release shipped inside
    a wheel), as they would type it: models/NAME."""
    from distill.files import release_as_typed

    path = Path(path)
    return (path.is_absolute() and release_as_typed(path)) or str(path)


def with_reported_bias(weights: Path, model: torch.nn.Module, quiet: bool) -> torch.nn.Module:
    """A network that never saw some classes is scored as predict and the demo use it: with the
    bias its report chose for them (without labels) on their logits, as the report's figures
    "after the bias" are; a line says so."""
    from distill.report import bias_added_line, report_beside
    from distill.transfer import WithBias, never_seen

    report = report_beside(weights)
    if (omitted := never_seen(report)) is None:
        return model
    if not quiet:
        console.print(bias_added_line(weights, report))
    return WithBias(model, omitted["bias"])


def warn_trained_among(weights: list[Path], images, size: int, scored: str) -> None:
    """Say in a line how many of a folder's images a network was trained on, found in another
    folder pixel for pixel (copied there), naming the first: its score counts them as new. Where
    distill's cache holds the training folder as it is now; nothing is decoded to find out."""
    import warnings

    from distill.datasets import FOLDER_PREFIX, folder_root
    from distill.datasets.folder import trained_among
    from distill.export import dataset_of

    scored_root = folder_root(scored) if scored.startswith(FOLDER_PREFIX) else None
    for trained in dict.fromkeys(dataset_of(path) for path in weights):
        if not trained.startswith(FOLDER_PREFIX):
            continue
        root = folder_root(trained)
        if (found := trained_among(root, size, images, scored_root)) and found[0]:
            count, among, first = found
            warnings.warn(f"{count:,} of these {len(images):,} images are, pixel for pixel, "
                          f"among the {among:,} training and validation images of {root}, "
                          f"which these networks were trained on ({first}"
                          f"{', ...' * (count > 1)}): their score counts them as new.",
                          stacklevel=2)


def check_unseen(weights: Path, scored: str, whole: bool) -> None:
    """Refuse to score a network on a folder that holds its training images under another path
    (photos/train for a network of photos/): the score would be taken for one on new images."""
    from distill.datasets import FOLDER_PREFIX, folder_root
    from distill.datasets.folder import training_images_among
    from distill.export import dataset_of

    trained = dataset_of(weights)
    if not (trained.startswith(FOLDER_PREFIX) and scored.startswith(FOLDER_PREFIX)):
        return
    if why := training_images_among(folder_root(trained),
                                    folder_root(scored), whole):
        raise DistillError(f"{why}, the folder {weights} was trained on: its score would count "
                           f"training images as new ones. `distill evaluate {weights}` scores "
                           "its test images; --dataset takes a folder it never saw.")


@app.command()
def export(
    weights: Annotated[Path, typer.Argument(help="Run folder or weights.safetensors file.",
                                            callback=shipped_or_given)],
    format: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="File to write, ending in .onnx (default: model.onnx beside the weights; for a "
             "release, e.g. models/convnet_tiny, convnet_tiny.onnx in the current folder).",
        show_default=False)] = None,
    quantize: Annotated[bool, typer.Option(
        help="Also write an int8 model (onnxruntime dynamic quantization) and score it.")] = False,
    data_dir: DataDir = None,
    test_images: TestImages = None,
) -> None:
    """Export a network to ONNX and check it against PyTorch on its test set."""
    from rich.table import Table

    from distill.export import (
        export_onnx,
        export_target,
        load_model,
        parity,
        quantize_int8,
        trained_dataset,
    )
    from distill.report import percent, report_beside
    from distill.transfer import never_seen

    if format != "onnx":
        raise DistillError(f"Unknown format {format!r}: only onnx is supported (--quantize adds "
                           "an int8 ONNX model beside it).")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise DistillError(f"ONNX export needs the onnx extra: {install_command('onnx')}") from error
    model, architecture = load_model(weights)
    target = export_target(weights, architecture, out)  # before a folder's minutes of decoding
    report = report_beside(weights)
    dataset = trained_dataset(weights)
    images, labels = dataset.load("test", data_dir)  # bad data fails before anything is written
    images, labels = images[:test_images], labels[:test_images]
    with console.status(f"Exporting {architecture} to ONNX"):
        export_onnx(model, target, dataset, report)
    rows = [("ONNX float32", target, parity(model, target, images, labels, dataset))]
    if quantize:
        int8 = target.with_name(target.stem + "-int8.onnx")
        quantize_int8(target, int8)
        rows.append(("ONNX int8", int8, parity(model, int8, images, labels, dataset)))
    table = Table(title=f"{architecture}: ONNX against PyTorch on {len(labels)} test images")
    for column in ("model", "bytes", "top-1", "PyTorch top-1", "same predictions",
                   "max |logit diff|"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, _, p in rows:
        table.add_row(name, f"{p['bytes']:,}", percent(p["onnx_top1"]), percent(p["pytorch_top1"]),
                      f"{p['same_predictions']:,}/{p['images']:,}", f"{p['max_abs_logit_diff']:.2e}")
    console.print(table)
    if rows[0][2]["same_predictions"] != rows[0][2]["images"]:
        raise DistillError(f"The float32 ONNX model disagrees with PyTorch on "
                           f"{rows[0][2]['images'] - rows[0][2]['same_predictions']} images.")
    console.print(f"Wrote {', '.join(str(path) for _, path, _ in rows)}. "
                  f"{'Its' if len(rows) == 1 else 'Their'} metadata holds the class names"
                  + (", the bias for the classes never seen in training (logit_bias)"
                     if never_seen(report) else "")
                  + " and the input's normalization (in onnxruntime: "
                  "session.get_modelmeta().custom_metadata_map).")


@app.command()
def predict(
    weights: Annotated[Path, typer.Argument(help="Run folder or weights.safetensors file.",
                                            callback=shipped_or_given)],
    images: Annotated[list[Path], typer.Argument(
        help="Image files (JPEG, PNG, HEIC, ...), one object each, or folders of them (their "
             "subfolders too; what is not an image there is skipped with a warning).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")] = False,
) -> None:
    """Classify image files: the top-2 classes with their probabilities.

    Each picture is fitted to the network's dataset as that dataset was made: a digit (any size,
    either polarity) centred as MNIST's, one garment trimmed and centred as Fashion-MNIST's (on a
    light or dark background), a folder's images resized whole.
    """
    import json
    import sys

    import torch
    from rich.console import Console
    from rich.progress import Progress

    from distill.datasets.folder import warn_skipped
    from distill.export import load_model, trained_dataset
    from distill.predict import load_image, prepare, probabilities, top_classes
    from distill.report import bias_added_line, report_beside
    from distill.transfer import reported_shift

    model, architecture = load_model(weights)  # checks the file's network arguments first
    dataset = trained_dataset(weights, images=False)
    files, images, prepared = pictures_in(images), [], []
    unreadable, blank = [], []  # files of the folders given, skipped
    with Progress(console=Console(stderr=True), transient=True,
                  disable=len(files) < 100 or not sys.stderr.isatty()) as bar:
        for path, in_folder in bar.track(list(files.items()), description="Reading"):
            try:  # a file named on the command line must be a picture; a folder's are skipped
                picture = load_image(path, dataset)
            except DistillError:
                if not in_folder:
                    raise
                unreadable.append(path)
                continue
            try:
                prepared.append(prepare(picture, dataset))
            except DistillError as error:
                if not in_folder:
                    raise DistillError(f"{path}: {error}") from error
                blank.append(path)
                continue
            images.append(path)
    warn_skipped(unreadable)
    warn_skipped(blank, one="is blank", many="are blank", why=": nothing stands out from the "
                 "background")
    if not images:
        raise DistillError("None of the files in the folders given is a picture to classify (see the "
                           "warnings above).")
    batch = torch.stack([p.image for p in prepared])
    inverted = [p.inverted for p in prepared] if dataset.framing != "resize" else None
    report = report_beside(weights)
    if (shift := reported_shift(report, dataset.num_classes)) is not None:
        Console(stderr=True).print(bias_added_line(weights, report))
    probs = probabilities(model, batch, dataset, shift)
    results = [{"image": str(path),
                "top2": [{"class": dataset.classes[c], "index": c, "probability": round(v, 4)}
                         for c, v in top_classes(row)],
                **({"inverted": inverted[i]} if inverted else {})}
               for i, (path, row) in enumerate(zip(images, probs))]
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        (first, second) = r["top2"]
        note = " (dark on a light background: inverted)" if r.get("inverted") else ""
        console.print(Text.assemble(
            f"{r['image']}: ", (first["class"], "bold"),
            f" {100 * first['probability']:.1f}%, then {second['class']} "
            f"{100 * second['probability']:.1f}%{note}"))


def pictures_in(paths: list[Path]) -> dict[Path, bool]:
    """The files `predict` reads, each with whether it came from a folder (whose files that are
    not images are skipped; a file named itself must be one)."""
    from distill.datasets.folder import image_files
    from distill.files import whole_system

    found: dict[Path, bool] = {}
    for path in paths:
        if path.is_dir() and (reason := whole_system(path.expanduser().resolve())):
            raise DistillError(f"{path} is {reason}: give image files, or a folder of them.")
        if path.is_dir():
            if not (files := image_files(path)):
                raise DistillError(f"{path} is a folder without files: give image files, or a "
                                   "folder of them.")
            found.update(dict.fromkeys(files, True))
        else:
            found[path] = False
    return found


@app.command()
def publish(
    run: Annotated[Path, typer.Argument(help="A finished run folder.")],
    target: Annotated[Path, typer.Argument(
        help="Folder to write, models/ARCHITECTURE (where timm's pretrained=True looks).")],
    assets: Annotated[Path | None, typer.Option(
        help="Also copy the run's examples.png and confusion matrix (as cm.png) here, for the "
             "README.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the release already in TARGET.")] = False,
) -> None:
    """Release a run's weights with a model card (front matter, figures, images)."""
    from distill.publish import publish as publish_run

    written = publish_run(run, target, overwrite, assets)
    console.print("Wrote " + ", ".join(map(str, written)))


@app.command()
def demo(
    models: Annotated[list[Path] | None, typer.Option(
        "--models", help="Run folders or weights files to show, all of one dataset (repeatable; "
                         "default: the dataset's released models in models/).",
        show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Whose released models to show: mnist (the default) or fashion-mnist. "
                          "With --models, their own dataset.", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 7860,
    share: Annotated[bool, typer.Option(help="Also serve through a public Gradio link.")] = False,
    data_dir: DataDir = None,
) -> None:
    """A local web page: draw a digit (or show a garment), the teacher and its students answer."""
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise DistillError(f"The demo needs the demo extra: {install_command('demo')}") from error
    from distill.demo import check_port, load_demo_models, serve

    check_port(host, port)
    loaded, scored_on = load_demo_models(models, dataset)
    console.print(f"Serving {len(loaded)} {scored_on.name} models at http://{host}:{port} "
                  "(Ctrl-C to stop)")
    serve(loaded, scored_on, host, port, share, data_dir)
