"""Weights on disk: safetensors files that name their architecture, so they load on their own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
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


