"""Weights on disk: safetensors files that name their architecture, so they load on their own."""

from __future__ import annotations

import json
import math
import reprlib
from dataclasses import replace
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

import distill.nets  # noqa: F401 - registers the networks with timm
from distill.datasets import DATASETS, FOLDER_PREFIX, Dataset, folder_root
from distill.datasets.base import has_control_character, shown_classes
from distill.datasets.folder import FolderDataset
from distill.errors import DistillError
from distill.files import MODELS_DIR, atomic_path
from distill.transfer import never_seen


def save_weights(model: nn.Module, architecture: str, kwargs: dict, path: Path,
                 dataset: Dataset | None = None) -> None:
    """Write the weights with their architecture (and dataset, classes) in the metadata,
    atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"architecture": architecture, "kwargs": json.dumps(kwargs)}
    if dataset is not None:
        metadata |= {"dataset": dataset.name, "classes": json.dumps(list(dataset.classes))}
        if isinstance(dataset, FolderDataset):  # so that it answers where its folder is not
            metadata["normalization"] = json.dumps({"mean": dataset.mean, "std": dataset.std})
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=metadata)


def weights_metadata(path: Path | str) -> dict[str, str]:
    """A weights file's metadata (of a run folder's weights too); {} where it has none."""
    path = Path(path)
    path = path / "weights.safetensors" if path.is_dir() else path
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}


def dataset_of(path: Path | str) -> str:
    """The dataset a network was trained on (MNIST for files from before datasets were named)."""
    return weights_metadata(path).get("dataset", "mnist")


MAX_KWARGS_CHARS = 2_000
MAX_DESCRIPTION_CHARS = 1_000_000  # a folder's class names and normalization


def network_arguments(metadata: dict[str, str]) -> dict | None:
    """The network arguments a weights file names; None where they are not a small JSON object
    (the file may come from anyone: a long or deeply nested text is not parsed at all)."""
    text = metadata.get("kwargs", "{}")
    try:
        kwargs = json.loads(text) if len(text) <= MAX_KWARGS_CHARS else None
    except (ValueError, RecursionError):
        kwargs = None
    return kwargs if isinstance(kwargs, dict) else None


def image_size_of(path: Path | str) -> int:
    """The side of the images a network was trained on: 28 unless its arguments name another
    (a folder decoded with --image-size)."""
    size = (network_arguments(weights_metadata(path)) or {}).get("img_size", 28)
    return size if isinstance(size, int) else 28  # load_model refuses a bad file in its own words


def trained_dataset(path: Path | str, images: bool = True) -> Dataset:
    """The dataset a network was trained on, decoded at the size it was trained at: every
    network here ends in global pooling, so it would also take images of another size and
    answer them worse, without a word.

    images: whether the caller reads the dataset's images (evaluate, export). Without, a folder
    network's dataset comes from its weights file alone (classes, size, channels, normalization):
    `distill predict` and the demo answer without the folder, and without decoding it.
    """
    from distill.datasets import get_dataset

    metadata = weights_metadata(path)
    name, size = metadata.get("dataset", "mnist"), image_size_of(path)
    if images or "normalization" not in metadata:
        root = folder_root(name)
        if name.startswith(FOLDER_PREFIX) and not root.is_dir():
            why = (": this command scores it on that folder's test images" if images else
                   ", and its weights file (from an older distill) does not say how those images "
                   "were normalized")
            raise DistillError(f"{path} was trained on the images in {root}, which is not there"
                               f"{why}. Put the folder back.")
        return get_dataset(name, size)
    # The file may come from anyone: every field is checked against the network it describes.
    try:
        if max(len(metadata["normalization"]), len(metadata["classes"])) > MAX_DESCRIPTION_CHARS:
            raise ValueError("too long")
        norm, classes = json.loads(metadata["normalization"]), json.loads(metadata["classes"])
        kwargs = network_arguments(metadata) or {}
        channels, count = kwargs.get("in_chans", 1), kwargs.get("num_classes", 10)
        dataset = FolderDataset(name=name, classes=tuple(map(str, classes)),
                                mean=tuple(map(float, norm["mean"])),
                                std=tuple(map(float, norm["std"])), channels=int(channels),
                                size=size, root=name.removeprefix(FOLDER_PREFIX))
        if (channels not in (1, 3) or len(dataset.classes) != count
                or not len(dataset.mean) == len(dataset.std) == channels):
            raise ValueError("its classes, channels or normalization do not fit the network")
        if not all(math.isfinite(m) for m in dataset.mean) or not all(
                math.isfinite(s) and s > 0 for s in dataset.std):  # NaN answers, without a word
            raise ValueError("its normalization is not finite numbers over positive spreads")
        if any(map(has_control_character, (name, *dataset.classes))):
            # Printed by every command: an escape sequence would drive the user's terminal.
            raise ValueError("control characters in its name or classes")
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise DistillError(f"{path}: its dataset's description is not readable ({error}): "
                           "refused.") from error
    return dataset


def read_as_trained(path: Path | str, dataset: Dataset, fix: str | None = None) -> Dataset:
    """`dataset` as the network at `path` reads it (`distill evaluate --dataset`): its classes must
    be the network's, in the network's order, or every score would pair the wrong classes; a folder
    is normalized as the network's own training images were. `fix`: what to do if not."""
    check_classes(path, dataset.name, dataset.classes, fix)
    if "normalization" in weights_metadata(path) and isinstance(dataset, FolderDataset):
        trained = trained_dataset(path, images=False)
        dataset = replace(dataset, mean=trained.mean, std=trained.std)
    return dataset


def check_classes(path: Path | str, name: str, classes: tuple[str, ...],
                  fix: str | None = None) -> None:
    """Refuse a dataset whose classes are not the network's, in its order. `fix`: what to do
    instead (by default: the network's own dataset, or a dataset with its classes)."""
    text = weights_metadata(path).get("classes", "")
    try:
        answers = json.loads(text) if 0 < len(text) <= MAX_DESCRIPTION_CHARS else None
    except (ValueError, RecursionError):
        answers = None
    if not text and dataset_of(path) in DATASETS:  # a file from before classes were written
        answers = list(DATASETS[dataset_of(path)].classes)
    if isinstance(answers, list) and [str(c) for c in answers] != list(classes):
        trained = dataset_of(path)
        fix = fix or (f"it was trained on {trained}: leave out --dataset to score it there, or "
                      f"give a network of {name}" if trained in DATASETS else
                      "give a dataset with the network's classes, in its order (class folders "
                      "sort by name)")
        raise DistillError(f"{path} answers for the classes {shown_classes(answers)}, and "
                           f"{name} has {shown_classes(classes)}: {fix}.")


def load_model(path: Path | str) -> tuple[nn.Module, str]:
    """The network stored in a weights file (or a run folder), in eval mode, and its name."""
    path = Path(path)
    if path.is_dir():
        path = path / "weights.safetensors"
    if not path.is_file():
        raise DistillError(f"No weights at {path}. Give a run folder or a weights.safetensors file"
                           f"{released_list() if path.parts[:1] == ('models',) else ''}.")
    if path.suffix == ".onnx":  # what `distill export` wrote: easy to mistake for the weights
        raise DistillError(f"{path} is an ONNX export, which onnxruntime runs; distill reads the "
                           "weights it came from: a run folder or weights.safetensors file.")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DistillError(f"{path} is not a readable safetensors file ({error}). "
                           "Re-create it with the command that made it.") from error
    model = build_from_metadata(metadata, path)
    architecture = metadata["architecture"]
    check_fits(model, state, path, architecture)
    if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
        raise DistillError(f"{path} holds NaN or infinite weights: the run that wrote it diverged. "
                           "Train it again with a lower learning rate.")
    model.load_state_dict(state)
    return model.eval(), architecture


def released_list() -> str:
    names = sorted(p.parent.name for p in MODELS_DIR.glob("*/weights.safetensors"))
    return f", or a release: models/{', models/'.join(names)}" if names else ""


def build_from_metadata(metadata: dict[str, str], path: Path) -> nn.Module:
    """The network a weights file's metadata names, its arguments checked before it is built
    (`distill.nets.arguments_problem`): the file may come from anyone."""
    from distill.nets import NETWORKS, arguments_problem

    architecture = metadata.get("architecture")
    if architecture is None:
        raise DistillError(f"{path} does not say which network it holds: it was not written by "
                           "distill.")
    if architecture not in NETWORKS:
        raise DistillError(f"{path} names the network {reprlib.repr(architecture)}, which is not "
                           f"one of distill's ({', '.join(NETWORKS)}): refused.")
    kwargs = network_arguments(metadata)
    if kwargs is None:
        raise DistillError(f"{path}: its network arguments are not a small JSON object: refused.")
    if problem := arguments_problem(architecture, kwargs):
        raise DistillError(f"{path}: {problem}: refused.")
    return timm.create_model(architecture, **kwargs)


def check_fits(model: nn.Module, state: dict, path: Path, architecture: str) -> None:
    """Explain a state-dict mismatch in a sentence rather than a dump of key names."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        raise DistillError(
            f"The weights in {path} do not fit a {architecture}: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} of another shape (e.g. "
            f"{(missing + unexpected + reshaped)[0]}). They were saved from another network or "
            "size.")




def export_target(weights: Path, architecture: str, out: Path | None) -> Path:
    """Where an export goes: an .onnx file, never over its input, never into a release."""
    from distill.files import is_in_releases

    folder = weights if weights.is_dir() else weights.parent
    # A release's name, not its network's: convnet_tiny and convnet_tiny.fashion_mnist are the same
    # network, and exporting both must not write one file twice.
    default = Path(f"{folder.name}.onnx") if is_in_releases(folder) else folder / "model.onnx"
    target = out or default
    if target.suffix != ".onnx":
        raise DistillError(f"--out {target} must end in .onnx: distill writes ONNX files only "
                           "(and never over a weights file).")
    if is_in_releases(target.parent):
        raise DistillError(f"{target} is inside models/, which holds the releases: export "
                           f"elsewhere, e.g. --out {architecture}.onnx.")
    if target.exists() and not target.is_file():
        raise DistillError(f"{target} is a folder: give the path of the .onnx file to write.")
    return target


def export_onnx(model: nn.Module, path: Path, dataset: Dataset | None = None,
                report: dict | None = None) -> None:
    """ONNX with a dynamic batch axis: input `image` (B, C, H, W) normalized as the dataset's
    images (MNIST's by default: (B, 1, 28, 28)), output `logits`. What a program that runs it
    needs to know is in the model's metadata (`onnx_metadata`); `report`: the run's, whose bias
    for classes never seen in training goes there too."""
    import warnings

    import onnx

    from distill.metrics import input_shape

    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(2, *input_shape(dataset)),), str(tmp),
                          input_names=["image"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                          verbose=False, external_data=False)
        exported = onnx.load(str(tmp))
        onnx.helper.set_model_props(exported, onnx_metadata(dataset or DATASETS["mnist"], report))
        onnx.save(exported, str(tmp))


def onnx_metadata(dataset: Dataset, report: dict | None = None) -> dict[str, str]:
    """The class names and the input's normalization, which a program running the ONNX file
    needs and would otherwise have to find in distill (a folder's are its own); for a network
    that never saw some classes, the bias `distill predict` adds to their logits."""
    channels = "grayscale" if dataset.channels == 1 else "RGB"
    omitted = never_seen(report)
    bias = {} if omitted is None else {
        "logit_bias": json.dumps({dataset.classes[int(c)]: b for c, b in omitted["bias"].items()}),
        "logit_bias_use": "classes never seen in training: add these to their logits, as distill "
                          "predict does (chosen on validation images without labels)"}
    return {**bias, "dataset": dataset.name, "classes": json.dumps(list(dataset.classes)),
            "mean": json.dumps(list(dataset.mean)), "std": json.dumps(list(dataset.std)),
            "input": f"image: float32 (batch, {dataset.channels}, {dataset.size}, {dataset.size}), "
                     f"{channels} pixels scaled to [0, 1], minus mean, over std, per channel"}


def onnx_logits(path: Path, images: torch.Tensor, batch: int = 1000,
                dataset: Dataset | None = None) -> torch.Tensor:
    """Logits of an ONNX model for uint8 test images, through onnxruntime on the CPU."""
    import onnxruntime

    from distill.data import prepare

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [torch.from_numpy(session.run(
        None, {"image": prepare(images[i: i + batch], dataset=dataset).numpy()})[0])
        for i in range(0, len(images), batch)]
    return torch.cat(out)


def quantize_int8(path: Path, out: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs advice about shape pre-processing on the root logger; the parity check
    # that follows measures the quantized model instead.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def parity(model: nn.Module, onnx_path: Path, images: torch.Tensor, labels: torch.Tensor,
           dataset: Dataset | None = None) -> dict:
    """ONNX against PyTorch on the same images: largest logit difference, prediction agreement."""
    from distill.metrics import predict_logits

    reference = predict_logits(model, images, dataset=dataset)
    exported = onnx_logits(onnx_path, images, dataset=dataset)
    return {"images": len(images),
            "max_abs_logit_diff": float((reference - exported).abs().max()),
            "same_predictions": int((reference.argmax(-1) == exported.argmax(-1)).sum()),
            "pytorch_top1": float((reference.argmax(-1) == labels).float().mean()),
            "onnx_top1": float((exported.argmax(-1) == labels).float().mean()),
            "bytes": onnx_path.stat().st_size}
