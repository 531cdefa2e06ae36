"""Classify ordinary pictures: fit each to the dataset's images as the dataset was made, then predict.

MNIST digits are white on black, fitted into a 20x20 box with their aspect ratio kept, and placed
in a 28x28 image so that their centre of mass is at the centre; `preprocess` does the same to any
picture of a digit (any size, either polarity). Fashion-MNIST's clothes were product photos,
trimmed to the object, their longer side resized to 28 pixels, centred and negated (Xiao et al.
2017); `frame_object` does the same to any photo of one object. A folder's networks see the
whole picture resized, as the folder's images were. `prepare` picks the dataset's way, so that
`distill predict` and the demo agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.data import EVAL_BATCH, IMAGE_SIZE, normalize
from distill.datasets import Dataset
from distill.errors import DistillError
from distill.pictures import (
    MAX_PIXELS,
    decode_image,
    draft,
    eight_bit,
    reading_pictures,
    upright,
    within_pixels,
)

DIGIT_BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 image
INK_THRESHOLD = 0.2  # of the brightest pixel: fainter pixels are paper, not ink
# Fashion-MNIST trimmed edges within 5% of the corners' colour; a photo's noise needs a little more.
OBJECT_THRESHOLD = 0.1


@dataclass
class Prepared:
    image: Tensor  # (H, W) or (C, H, W) float in [0, 1], as the dataset's images
    inverted: bool  # the input was dark on a light background, and was inverted


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


def load_image(path: Path, dataset: Dataset | None = None) -> np.ndarray:
    """The picture in a file as (H, W, 4) uint8 RGBA; a clear error for anything that is not an
    image. For a folder's network (`dataset`), decoded as the folder's images were."""
    from PIL import Image, UnidentifiedImageError

    try:
        with reading_pictures(), Image.open(path) as image:  # reads the header only
            if dataset is not None and dataset.framing == "resize":
                draft(image, dataset.size, dataset.channels)
            else:  # a digit or a garment is framed from the whole picture, read in full if it fits
                within_pixels(image, MAX_PIXELS)
            check_pixels(image.width, image.height, str(path))
            return np.asarray(eight_bit(upright(image)).convert("RGBA"))
    except FileNotFoundError as error:
        raise DistillError(f"No image at {path}.") from error
    except (UnidentifiedImageError, OSError) as error:
        raise DistillError(f"{path} is not an image that can be read (JPEG, PNG, HEIC, ...).") from error


def check_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise DistillError(f"{name} is {width}x{height} pixels, over the {MAX_PIXELS:,} distill "
                           "reads: make it smaller first (a network reads it at a few dozen pixels a side).")


def prepare(picture: np.ndarray, dataset: Dataset) -> Prepared:
    """A picture ((H, W) gray, or (H, W, 3 or 4) RGB(A), uint8) fitted to the dataset's images,
    in the dataset's own way (its `framing`)."""
    if dataset.framing == "digit":
        return preprocess(to_gray(picture))
    if dataset.framing == "object":
        return frame_object(to_gray(picture), dataset.size)
    from PIL import Image

    array = decode_image(Image.fromarray(np.asarray(picture, dtype=np.uint8)), dataset.size,
                         dataset.channels)
    image = torch.from_numpy(array.astype(np.float32) / 255)
    return Prepared(image if dataset.channels == 1 else image.permute(2, 0, 1), False)


def light_on_black(gray: np.ndarray | Tensor) -> tuple[Tensor, bool]:
    """The picture as a tensor, light on black (inverted when its border, mostly background, is
    light), and whether it was inverted."""
    x = torch.as_tensor(np.asarray(gray, dtype=np.float32))
    if x.ndim != 2:
        raise DistillError("Expected a single grayscale image.")
    inverted = bool(border(x).median() > 0.5)
    return (1 - x if inverted else x), inverted


def border(x: Tensor) -> Tensor:
    """The outermost pixels of a picture: mostly background, whatever the picture shows."""
    return torch.cat([x[0], x[-1], x[:, 0], x[:, -1]])


def frame_object(gray: np.ndarray | Tensor, size: int = IMAGE_SIZE) -> Prepared:
    """Any grayscale picture of one object in [0, 1] as Fashion-MNIST made its images from
    product photos: trimmed to the object, its longer side resized to `size`, centred, light on
    black. Intensities are kept, not stretched: a pale garment stays faint, as in the dataset."""
    x, inverted = light_on_black(gray)
    background = border(x).median()
    x = (x - background).clamp(min=0)
    if x.max() <= OBJECT_THRESHOLD:
        raise DistillError("The image is blank: nothing in it stands out from its background.")
    fitted = crop_and_fit(x, OBJECT_THRESHOLD, size)
    canvas = torch.zeros(size, size)
    top, left = (size - fitted.shape[0]) // 2, (size - fitted.shape[1]) // 2
    canvas[top: top + fitted.shape[0], left: left + fitted.shape[1]] = fitted
    return Prepared(canvas, inverted)


def crop_and_fit(x: Tensor, threshold: float, box: int) -> Tensor:
    """The part of `x` whose pixels exceed `threshold`, its longer side resized to `box` pixels,
    its aspect ratio kept."""
    rows, cols = torch.nonzero(x > threshold, as_tuple=True)
    x = x[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = x.shape
    scale = box / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(x[None, None], size=size, mode="bilinear", antialias=True,
                         align_corners=False)[0, 0].clamp(0, 1)


def preprocess(gray: np.ndarray | Tensor) -> Prepared:
    """Any grayscale digit picture in [0, 1] to a 28x28 MNIST-style image."""
    x, inverted = light_on_black(gray)
    x = (x - x.min()).clamp(min=0)
    if x.max() <= 0.05:
        raise DistillError("Draw a digit first: the image is blank.")
    x = x / x.max()
    digit = crop_and_fit(x, INK_THRESHOLD, DIGIT_BOX)
    size = digit.shape
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


@torch.inference_mode()
def probabilities(model: nn.Module, images: Tensor, dataset: Dataset | None = None,
                  shift: Tensor | None = None) -> Tensor:
    """Class probabilities for (B, H, W) or (B, C, H, W) images in [0, 1], EVAL_BATCH at a time
    (a folder of photos at once took twice as long per image, with a large peak of memory).
    `shift`: added to the logits first (`transfer.reported_shift`, for classes never seen)."""
    x = images.unsqueeze(1) if images.dim() == 3 else images
    model.eval()
    return torch.cat([(model(normalize(part, dataset)).float()
                       + (0 if shift is None else shift)).softmax(-1)
                      for part in x.split(EVAL_BATCH)])


def top_classes(probs: Tensor, k: int = 2) -> list[tuple[int, float]]:
    values, classes = probs.topk(k)
    return [(int(c), float(v)) for c, v in zip(classes, values)]
