"""Classify digits in ordinary image files: preprocess them as MNIST was made, then predict.

MNIST digits are white on black, fitted into a 20x20 box with their aspect ratio kept, and placed
in a 28x28 image so that their centre of mass is at the centre. `preprocess` does the same to any
picture of a digit (any size, either polarity), so that `distill predict` and the demo agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.data import IMAGE_SIZE, normalize
from distill.datasets import Dataset
from distill.errors import DistillError

DIGIT_BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 image
INK_THRESHOLD = 0.2  # of the brightest pixel: fainter pixels are paper, not ink
# Larger images are refused before they are decoded: a photo of a digit needs far fewer pixels,
# and a small compressed file can claim billions (a decompression bomb).
MAX_PIXELS = 4096 * 4096


@dataclass
class Prepared:
    image: Tensor  # (28, 28) float in [0, 1], white digit on black
    inverted: bool  # the input was a dark digit on light paper


def to_gray(image: np.ndarray) -> np.ndarray:
    """An (H, W), (H, W, 3) or (H, W, 4) uint8 image as grayscale in [0, 1].

    Transparent pixels are paper: they are composited onto white, as a viewer shows them.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.max(initial=0) > 1:
        array = array / 255
    if array.ndim == 2:
        return array
    alpha = array[..., 3:4] if array.shape[-1] == 4 else np.ones_like(array[..., :1])
    rgb = array[..., :3] * alpha + (1 - alpha)
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_image(path: Path) -> np.ndarray:
    """A grayscale image in [0, 1]; a clear error for anything that is not an image."""
    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # ours, lower, is checked below
    try:
        with Image.open(path) as image:  # reads the header only
            check_pixels(image.width, image.height, str(path))
            return to_gray(np.asarray(image.convert("RGBA")))
    except FileNotFoundError as error:
        raise DistillError(f"No image at {path}.") from error
    except (UnidentifiedImageError, OSError) as error:
        raise DistillError(f"{path} is not an image that can be read (PNG, JPEG, ...).") from error
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise DistillError(f"{name} is {width}x{height} pixels, over the {MAX_PIXELS:,} distill "
                           "reads: make it smaller first (a digit needs a few hundred).")


def preprocess(gray: np.ndarray | Tensor) -> Prepared:
    """Any grayscale digit picture in [0, 1] to a 28x28 MNIST-style image."""
    x = torch.as_tensor(np.asarray(gray, dtype=np.float32))
    if x.ndim != 2:
        raise DistillError("Expected a single grayscale image.")
    # The border is mostly paper: a light border means a dark digit on light paper.
    border = torch.cat([x[0], x[-1], x[:, 0], x[:, -1]])
    inverted = bool(border.median() > 0.5)
    if inverted:
        x = 1 - x
    x = (x - x.min()).clamp(min=0)
    if x.max() <= 0.05:
        raise DistillError("Draw a digit first: the image is blank.")
    x = x / x.max()
    rows, cols = torch.nonzero(x > INK_THRESHOLD, as_tuple=True)
    x = x[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = x.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    digit = F.interpolate(x[None, None], size=size, mode="bilinear", antialias=True,
                          align_corners=False)[0, 0].clamp(0, 1)
    # Centre of mass to the image's centre, as MNIST was made.
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    mass = digit.sum()
    cy, cx = float((ys * digit).sum() / mass), float((xs * digit).sum() / mass)
    top = int(round(IMAGE_SIZE / 2 - 0.5 - cy))
    left = int(round(IMAGE_SIZE / 2 - 0.5 - cx))
    top = min(max(top, 0), IMAGE_SIZE - size[0])
    left = min(max(left, 0), IMAGE_SIZE - size[1])
    canvas = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    canvas[top: top + size[0], left: left + size[1]] = digit
    return Prepared(canvas, inverted)


def load_resized(path: Path, dataset: Dataset) -> Tensor:
    """An image resized to the dataset's size and channels, in [0, 1]: (H, W) or (C, H, W)."""
    from PIL import Image

    gray = load_image(path)  # the checks: readable, within the pixel budget
    if dataset.channels == 1:
        image = Image.fromarray((gray * 255).astype(np.uint8))
        return torch.from_numpy(np.asarray(image.resize((dataset.size, dataset.size)),
                                           dtype=np.float32) / 255)
    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((dataset.size, dataset.size))
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1)


@torch.inference_mode()
def probabilities(model: nn.Module, images: Tensor, dataset: Dataset | None = None) -> Tensor:
    """Class probabilities for (B, H, W) or (B, C, H, W) images in [0, 1]."""
    x = images.unsqueeze(1) if images.dim() == 3 else images
    return model.eval()(normalize(x, dataset)).float().softmax(-1)


def top_classes(probs: Tensor, k: int = 2) -> list[tuple[int, float]]:
    values, classes = probs.topk(k)
    return [(int(c), float(v)) for c, v in zip(classes, values)]
