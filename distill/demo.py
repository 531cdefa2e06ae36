"""`distill demo`: draw a digit in the browser; the teacher and its students answer side by side.

Built with Gradio (the `demo` extra). Drawings and uploads go through `predict.preprocess`, the
same path as `distill predict`.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.errors import DistillError
from distill.export import load_model
from distill.nets import MODELS_DIR, parameter_count
from distill.predict import MAX_PIXELS, check_pixels, preprocess, probabilities, to_gray

EMPTY_CANVAS = "Draw a digit first."


@dataclass
class DemoModel:
    name: str
    model: nn.Module
    parameters: int
    bytes: int


def released_model_paths() -> list[Path]:
    """The released MNIST models (the demo reads digits), teacher first, then students from
    largest to smallest. Releases of other datasets carry a tag: digitnet.fashion_mnist."""
    paths = [p for p in sorted(MODELS_DIR.glob("*/weights.safetensors"))
             if "." not in p.parent.name]
    teacher = [p for p in paths if p.parent.name == "digitnet"]
    return teacher + sorted((p for p in paths if p not in teacher),
                            key=lambda p: -p.stat().st_size)


def load_demo_models(paths: list[Path] | None = None) -> list[DemoModel]:
    paths = paths or released_model_paths()
    if not paths:
        raise DistillError(f"No released models in {MODELS_DIR}. Pass --models with run folders "
                           "or weights files.")
    models = []
    for path in paths:
        model, architecture = load_model(path)
        weights = path / "weights.safetensors" if path.is_dir() else path
        name = "teacher (digitnet)" if architecture == "digitnet" else architecture
        models.append(DemoModel(name, model, parameter_count(model),
                                weights.stat().st_size))
    return models


def classify(models: list[DemoModel], image: np.ndarray | dict | None, is_photo: bool = False
             ) -> tuple[str, list[dict[str, float] | None], list[str]]:
    """(status line, per-model class probabilities, per-model cost line) for a drawing or photo."""
    if isinstance(image, dict):  # the sketchpad's value: background, layers, composite
        image = image.get("composite")
    blank = ([None] * len(models), [cost_line(m) for m in models])
    if image is None or np.asarray(image).size == 0:
        return EMPTY_CANVAS, *blank
    try:
        check_pixels(np.asarray(image).shape[1], np.asarray(image).shape[0], "The image")
        prepared = preprocess(to_gray(np.asarray(image)))
    except DistillError as error:
        return str(error), *blank
    labels, costs = [], []
    for m in models:
        started = time.perf_counter()
        probs = probabilities(m.model, prepared.image.unsqueeze(0))[0]
        seconds = time.perf_counter() - started
        labels.append({str(digit): float(p) for digit, p in enumerate(probs)})
        costs.append(cost_line(m, seconds))
    # A drawing is always dark on light; only for photos is the inversion news.
    note = " (a dark digit on light paper: inverted first)" if prepared.inverted and is_photo else ""
    return f"Each model's three most likely digits{note}:", labels, costs


def cost_line(m: DemoModel, seconds: float | None = None) -> str:
    took = f" · answered in {seconds * 1000:.1f} ms" if seconds is not None else ""
    return f"{m.parameters:,} parameters · {m.bytes / 1024:,.1f} KiB on disk{took}"


def example_images(count: int = 8, data_dir: Path | str | None = None) -> list[str]:
    """A row of MNIST test digits as PNG files, to click and try."""
    from PIL import Image

    from distill.data import load_split

    images, _ = load_split("test", data_dir)
    folder = Path(tempfile.mkdtemp(prefix="distill-demo-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # gradio serves them until then
    paths = []
    for i in range(count):
        path = folder / f"test-{i}.png"
        Image.fromarray(images[i].numpy()).resize((112, 112), Image.NEAREST).save(path)
        paths.append(str(path))
    return paths


def build_app(models: list[DemoModel], examples: list[str]):
    import gradio as gr

    def answer(image, is_photo=False):
        status, labels, costs = classify(models, image, is_photo)
        return [status, *labels, *costs]

    def answer_photo(image):
        return answer(image, is_photo=True)

    with gr.Blocks(title="distill: teacher and students") as app:
        gr.Markdown("# Draw a digit\nThe DigitNet teacher and its distilled students answer the "
                    "same drawing, each with what it costs.")
        with gr.Row():
            with gr.Column(scale=1):
                sketch = gr.Sketchpad(label="Draw here (select the brush first)", type="numpy",
                                      image_mode="RGBA", canvas_size=(280, 280), fixed_canvas=True,
                                      brush=gr.Brush(colors=["#000000"], default_size=14,
                                                     color_mode="fixed"),
                                      layers=False, elem_id="sketch")
                classify_button = gr.Button("Classify the drawing", variant="primary",
                                            elem_id="classify")
                upload = gr.Image(label="...or upload a photo of a digit", type="numpy",
                                  image_mode="RGBA", sources=["upload"], elem_id="upload")
                gr.Examples(examples=examples, inputs=upload, label="MNIST test digits")
            with gr.Column(scale=2):
                status = gr.Markdown(EMPTY_CANVAS, elem_id="status")
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


def serve(models: list[DemoModel], host: str, port: int, share: bool,
          data_dir: Path | str | None = None) -> None:
    from PIL import Image

    # Gradio decodes uploads with PIL before distill sees them: past this many pixels PIL refuses
    # (a 144 KB PNG can claim 20000x20000 pixels, gigabytes once decoded).
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # PIL refuses at twice this, warns above it
    torch.set_num_threads(max(1, torch.get_num_threads()))
    app = build_app(models, example_images(data_dir=data_dir))
    app.launch(server_name=host, server_port=port, share=share, show_error=True)
