"""`distill demo`: draw or upload a picture in the browser; the teacher and its students answer
side by side, in the words of their dataset (a digit, a sneaker, a folder's class).

Built with Gradio (the `demo` extra). Uploads are read from their files by `predict.load_image`
and drawings and uploads fitted by `predict.prepare`: the same path as `distill predict`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from distill.datasets import Dataset, get_dataset
from distill.errors import DistillError
from distill.export import dataset_of, image_size_of, load_model, trained_dataset
from distill.files import MODELS_DIR, atomic_path
from distill.nets import parameter_count, release_name
from distill.pictures import MAX_PIXELS, read_heic
from distill.predict import check_pixels, load_image, prepare, probabilities
from distill.report import report_beside
from distill.transfer import reported_shift

EMPTY_CANVAS = "Draw a digit first."
EMPTY_PICTURE = "Draw or upload a picture first."


@dataclass
class DemoModel:
    name: str
    model: nn.Module
    parameters: int
    bytes: int
    shift: Tensor | None = None  # the bias a report chose for classes never seen in training


def released_model_paths(dataset: str = "mnist") -> list[Path]:
    """The released models of one dataset (MNIST's are untagged, others carry a tag:
    digitnet.fashion_mnist), teacher first, then students from largest to smallest."""
    paths = [p for p in sorted(MODELS_DIR.glob("*/weights.safetensors"))
             if release_name(p.parent.name.split(".")[0], dataset) == p.parent.name]
    teacher = [p for p in paths if p.parent.name == release_name("digitnet", dataset)]
    return teacher + sorted((p for p in paths if p not in teacher),
                            key=lambda p: -p.stat().st_size)


def load_demo_models(paths: list[Path] | None = None, dataset: str | None = None
                     ) -> tuple[list[DemoModel], Dataset]:
    """The models to show and the dataset they answer for: `paths`, else the releases of
    `dataset` (MNIST's by default). All of them must answer for one dataset."""
    asked = get_dataset(dataset) if dataset is not None else None  # an unknown name: one line
    paths = paths or released_model_paths(asked.name if asked else "mnist")
    if not paths:
        raise DistillError(f"No released {asked.name if asked else 'mnist'} models in {MODELS_DIR}. "
                           "Pass --models with run folders or weights files.")
    models = []
    for path in paths:
        model, architecture = load_model(path)
        weights = path / "weights.safetensors" if path.is_dir() else path
        label = "teacher (digitnet)" if architecture == "digitnet" else architecture
        shift = reported_shift(report_beside(path),
                               trained_dataset(path, images=False).num_classes)
        models.append(DemoModel(label, model, parameter_count(model), weights.stat().st_size,
                                shift))
    found = {(dataset_of(path), image_size_of(path)): path for path in paths}
    if len(found) > 1:
        named = ", ".join(f"{path} ({name} at {size}x{size})" for (name, size), path in found.items())
        raise DistillError(f"These models answer for different datasets or image sizes: {named}. "
                           "The demo shows one dataset at a time: give --models of one.")
    ((name, size), path), = found.items()
    if asked is not None and asked.name != name:
        raise DistillError(f"{path} was trained on {name}, not {asked.name}: leave out --dataset, "
                           f"or give --models of {asked.name}.")
    return models, trained_dataset(path, images=False)


def classify(models: list[DemoModel], dataset: Dataset, image: np.ndarray | dict | str | None,
             is_photo: bool = False) -> tuple[str, list[dict[str, float] | None], list[str]]:
    """(status line, per-model class probabilities, per-model cost line) for a drawing, or a
    photo's file (read as `distill predict` reads it: turned upright, a big JPEG drafted)."""
    if isinstance(image, dict):  # the sketchpad's value: background, layers, composite
        image = image.get("composite")
    blank = ([None] * len(models), [cost_line(m) for m in models])
    if image is None or (not isinstance(image, str) and np.asarray(image).size == 0):
        return empty_message(dataset), *blank
    try:
        if isinstance(image, str):
            image = load_image(Path(image), dataset)
        check_pixels(np.asarray(image).shape[1], np.asarray(image).shape[0], "The image")
        prepared = prepare(np.asarray(image), dataset)
    except DistillError as error:
        return str(error), *blank
    labels, costs = [], []
    for m in models:
        started = time.perf_counter()
        probs = probabilities(m.model, prepared.image.unsqueeze(0), dataset, m.shift)[0]
        seconds = time.perf_counter() - started
        labels.append({name: float(p) for name, p in zip(dataset.classes, probs)})
        costs.append(cost_line(m, seconds))
    # A drawing is always dark on light; only for photos is the inversion news.
    note = " (dark on a light background: inverted first)" if prepared.inverted and is_photo else ""
    things = "digits" if dataset.framing == "digit" else "classes"
    shown = "three" if dataset.num_classes > 2 else "two"  # a folder may have two classes
    return f"Each model's {shown} most likely {things}{note}:", labels, costs


def empty_message(dataset: Dataset) -> str:
    return EMPTY_CANVAS if dataset.framing == "digit" else EMPTY_PICTURE


def cost_line(m: DemoModel, seconds: float | None = None) -> str:
    took = f" · answered in {seconds * 1000:.1f} ms" if seconds is not None else ""
    return f"{m.parameters:,} parameters · {m.bytes / 1024:,.1f} KiB on disk{took}"


def example_images(dataset: Dataset, count: int = 8, data_dir: Path | str | None = None
                   ) -> list[str]:
    """A row of the dataset's test images as PNG files, to click and try."""
    from PIL import Image

    from distill.data import load_split

    try:
        images, _ = load_split("test", data_dir, dataset=dataset)
    except DistillError:  # a folder network shown where its folder is not: no examples to click
        return []
    # Gradio serves files from the temporary folder. One folder per user and dataset, written
    # again at each start: a demo ended by closing its terminal (no exit handlers run) leaves
    # nothing new behind, where a folder of its own each time piled up.
    key = hashlib.sha256(dataset.name.encode()).hexdigest()[:12]
    user = getattr(os, "getuid", lambda: None)()
    folder = Path(tempfile.gettempdir()) / f"distill-demo-{user}-{key}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.is_symlink() or (user is not None and folder.stat().st_uid != user):
        folder = Path(tempfile.mkdtemp(prefix="distill-demo-"))  # not ours: never written through
    paths = []
    for i in range(min(count, len(images))):
        path = folder / f"test-{i}.png"
        array = images[i].numpy() if images[i].dim() == 2 else images[i].permute(1, 2, 0).numpy()
        with atomic_path(path) as tmp:  # a demo started beside this one may be serving it
            Image.fromarray(array).resize((112, 112), Image.NEAREST).save(tmp, format="PNG")
        paths.append(str(path))
    return paths


def build_app(models: list[DemoModel], dataset: Dataset, examples: list[str]):
    import gradio as gr

    def answer(image, is_photo=False):
        status, labels, costs = classify(models, dataset, image, is_photo)
        return [status, *labels, *costs]

    def answer_photo(image):
        return answer(image, is_photo=True)

    digits = dataset.framing == "digit"
    intro = ("# Draw a digit\nThe DigitNet teacher and its distilled students answer the same "
             "drawing, each with what it costs." if digits else
             f"# Draw or upload a picture\nThe DigitNet teacher and its distilled students "
             f"({dataset.name}) answer the same picture with one of {dataset.num_classes} "
             f"classes ({', '.join(dataset.classes)}), each with what it costs.")
    with gr.Blocks(title="distill: teacher and students") as app:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column(scale=1):
                sketch = gr.Sketchpad(label="Draw here (select the brush first)", type="numpy",
                                      image_mode="RGBA", canvas_size=(280, 280), fixed_canvas=True,
                                      brush=gr.Brush(colors=["#000000"], default_size=14,
                                                     color_mode="fixed"),
                                      layers=False, elem_id="sketch")
                classify_button = gr.Button("Classify the drawing", variant="primary",
                                            elem_id="classify")
                upload = gr.Image(label="...or upload a photo of " + ("a digit" if digits else
                                                                      "one object"),
                                  # The file itself, undecoded: `classify` reads it as predict does.
                                  type="filepath", image_mode=None, sources=["upload"],
                                  elem_id="upload")
                if examples:
                    gr.Examples(examples=examples, inputs=upload, label="MNIST test digits" if
                                digits else f"{dataset.name} test images")
            with gr.Column(scale=2):
                status = gr.Markdown(empty_message(dataset), elem_id="status")
                labels, costs = [], []
                with gr.Row():
                    for i, m in enumerate(models):
                        with gr.Column(min_width=180):
                            labels.append(gr.Label(num_top_classes=3, label=m.name,
                                                   elem_id=f"label-{i}"))
                            costs.append(gr.Markdown(cost_line(m), elem_id=f"cost-{i}"))
        outputs = [status, *labels, *costs]
        classify_button.click(answer, inputs=sketch, outputs=outputs)
        sketch.change(answer, inputs=sketch, outputs=outputs, show_progress="hidden")
        upload.change(answer_photo, inputs=upload, outputs=outputs)
    return app


def check_port(host: str, port: int) -> None:
    """A clear error for a port that is taken, before the models load."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise DistillError(f"Cannot serve on {host}:{port} ({error.strerror}): another program "
                               "uses it. Pass --port with a free port, e.g. --port 7861.") from error


def serve(models: list[DemoModel], dataset: Dataset, host: str, port: int, share: bool,
          data_dir: Path | str | None = None) -> None:
    from PIL import Image

    # Gradio opens an upload with PIL, and decodes a drawing, before distill sees them: past
    # MAX_PIXELS PIL refuses (a 144 KB PNG can claim 20000x20000 pixels, gigabytes decoded).
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # PIL refuses at twice this, warns above it
    read_heic()  # an iPhone's photo: Gradio opens it before distill reads it
    torch.set_num_threads(max(1, torch.get_num_threads()))
    app = build_app(models, dataset, example_images(dataset, data_dir=data_dir))
    app.launch(server_name=host, server_port=port, share=share, show_error=True)
