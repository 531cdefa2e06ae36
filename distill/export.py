"""Weights on disk: safetensors files that name their architecture, so they load on their own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

import distill.nets  # noqa: F401 - registers the networks with timm
from distill.errors import DistillError


def save_weights(model: nn.Module, architecture: str, kwargs: dict, path: Path) -> None:
    """Write the weights with their architecture in the metadata, atomically."""
    tmp = path.with_suffix(".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp, metadata={"architecture": architecture, "kwargs": json.dumps(kwargs)})
    os.replace(tmp, path)


def load_model(path: Path | str) -> tuple[nn.Module, str]:
    """The network stored in a weights file (or a run folder), in eval mode, and its name."""
    path = Path(path)
    if path.is_dir():
        path = path / "weights.safetensors"
    if not path.is_file():
        raise DistillError(f"No weights at {path}. Give a run folder or a weights.safetensors file.")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DistillError(f"{path} is not a readable safetensors file ({error}). "
                           "Re-create it with the command that made it.") from error
    if "architecture" not in metadata:
        raise DistillError(f"{path} does not say which network it holds: it was not written by "
                           "distill.")
    architecture = metadata["architecture"]
    try:
        model = timm.create_model(architecture, **json.loads(metadata.get("kwargs", "{}")))
    except RuntimeError as error:  # timm's "Unknown model"
        raise DistillError(f"{path} holds a '{architecture}', which this version of distill does "
                           "not know.") from error
    check_fits(model, state, path, architecture)
    model.load_state_dict(state)
    return model.eval(), architecture


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




def export_onnx(model: nn.Module, path: Path) -> None:
    """ONNX with a dynamic batch axis: input `image` (B, 1, 28, 28) normalized, output `logits`."""
    import warnings

    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(2, 1, 28, 28),), str(tmp),
                          input_names=["image"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                          verbose=False, external_data=False)
    os.replace(tmp, path)


def onnx_logits(path: Path, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Logits of an ONNX model for uint8 test images, through onnxruntime on the CPU."""
    import onnxruntime

    from distill.data import prepare

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = [torch.from_numpy(session.run(None, {"image": prepare(images[i: i + batch]).numpy()})[0])
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


def parity(model: nn.Module, onnx_path: Path, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """ONNX against PyTorch on the same images: largest logit difference, prediction agreement."""
    from distill.report import predict_logits

    reference = predict_logits(model, images)
    exported = onnx_logits(onnx_path, images)
    return {"images": len(images),
            "max_abs_logit_diff": float((reference - exported).abs().max()),
            "same_predictions": int((reference.argmax(-1) == exported.argmax(-1)).sum()),
            "pytorch_top1": float((reference.argmax(-1) == labels).float().mean()),
            "onnx_top1": float((exported.argmax(-1) == labels).float().mean()),
            "bytes": onnx_path.stat().st_size}
