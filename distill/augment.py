"""Augmentation as whole batches on the training device: random affine transforms (and flips,
erased rectangles, CutMix) drawn per image from a table of uniforms that depends only on (seed,
epoch, index)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """Random affine augmentation, drawn per image.

    With `random_magnitude` (as in TrivialAugment), an image's rotation, shift and zoom are
    further scaled by a magnitude of its own: most images change a little, a few span the full
    ranges, so a network can learn the extremes without losing the look of undistorted digits.

    degrees: rotation drawn from [-degrees, degrees].
    translate: shift in each axis drawn from [-translate, translate], as a fraction of the size.
    scale: zoom drawn from [1 - scale, 1 + scale].
    """

    degrees: float = 15.0
    translate: float = 0.1
    scale: float = 0.1
    random_magnitude: bool = False  # each image's ranges times its own uniform draw from [0, 1]
    hflip: bool = False  # mirror half the images left to right (clothes, not digits)
    # Random erasing (Zhong et al. 2020): the share of images in which a rectangle of 2-40% of the
    # area, of aspect ratio 0.3-3.3, is painted one random gray (after the affine transform).
    erasing: float = 0.0
    # CutMix (Yun et al. 2019), for a teacher: the share of images into which a rectangle of the
    # image before it in the batch is pasted (last of all), of an area drawn uniformly (their
    # alpha 1); the image's label then weighs each class by its share of the pixels.
    cutmix: float = 0.0

    def scaled(self, strength: float) -> Augment:
        return replace(self, degrees=self.degrees * strength, translate=self.translate * strength,
                       scale=self.scale * strength)

    @property
    def at_full_range(self) -> Augment:
        """The same ranges with every image drawn across them, no magnitude of its own."""
        return replace(self, random_magnitude=False)

    @property
    def moves(self) -> bool:
        """Whether the affine part (rotation, shift, zoom, mirror) changes anything."""
        return bool(self.degrees or self.translate or self.scale or self.hflip)

    @property
    def is_identity(self) -> bool:
        return not self.moves and self.erasing == 0 and self.cutmix == 0

    def __str__(self) -> str:
        """In words, as a command tells a user, e.g. 'mirrored, shifts up to 10%'."""
        parts = (["mirrored"] if self.hflip else []) + [
            f"{what} up to {value:g}{unit}" for what, value, unit in (
                ("rotations", self.degrees, " degrees"), ("shifts", 100 * self.translate, "%"),
                ("zooms", 100 * self.scale, "%")) if value] + [
            f"{what} on {100 * share:g}% of images" for what, share in (
                ("erasing", self.erasing), ("CutMix", self.cutmix)) if share]
        magnitude = " (each image at a magnitude of its own)" if self.random_magnitude else ""
        return ", ".join(parts) + magnitude if parts else "none"


# Settings added to Augment after runs and caches were recorded, with the value those had: a key
# at that value is left out of cache keys, and filled into old runs' configs.
ADDED_AUGMENT = {"hflip": False, "erasing": 0.0, "cutmix": 0.0}


def recorded(spec: Augment) -> dict:
    """The spec as runs and caches record it: the added settings only where they are in use."""
    return {key: value for key, value in asdict(spec).items()
            if not (key in ADDED_AUGMENT and value == ADDED_AUGMENT[key])}


# The "heavily augmented" test set (each dataset's `heavy_augment`) is drawn with a fixed seed, so
# that every model is scored on the same images.
HEAVY_AUGMENT_SEED = 1_234


# One row per image of the largest split, so that a row depends on nothing but (seed, epoch, index).
UNIFORMS_ROWS = 60_000


def augmentation_uniforms(seed: int, epoch: int, device: torch.device | str = "cpu",
                          view: int = 0, rows: int = UNIFORMS_ROWS) -> Tensor:
    """(rows, 16) uniforms, row i for split index i: rotation, shift x, shift y, zoom in [-1, 1],
    then in [0, 1] the magnitude, the flip, the erasing's draw, area, aspect, left, top and gray,
    and CutMix's draw, area, centre x and centre y. `view` numbers the extra copies of batch
    augmentation. At least 60,000 rows: MNIST's, whatever the split's size."""
    generator = torch.Generator().manual_seed((seed + 1000 * view) * 100_003 + epoch)
    rows = max(rows, UNIFORMS_ROWS)
    # Each column drawn after the ones before, so that adding it left every earlier run's
    # augmentation as it was.
    signed = torch.rand(rows, 4, generator=generator) * 2 - 1
    magnitude = torch.rand(rows, 1, generator=generator)
    flip = torch.rand(rows, 1, generator=generator)
    erasing = torch.rand(rows, 6, generator=generator)
    cutmix = torch.rand(rows, 4, generator=generator)
    return torch.cat([signed, magnitude, flip, erasing, cutmix], dim=1).to(device)


def augment(images: Tensor, uniforms: Tensor, spec: Augment) -> Tensor:
    """Rotate, shift and zoom (mirror, erase) each image of a (B, C, H, W) float batch by its own
    row of uniforms."""
    if not spec.moves:
        return erase(images, uniforms, spec.erasing)  # the images as they are, without erasing
    signed = uniforms[:, :4] * uniforms[:, 4:5] if spec.random_magnitude else uniforms[:, :4]
    angle = signed[:, 0] * math.radians(spec.degrees)
    shift = signed[:, 1:3] * spec.translate * 2  # grid coordinates span [-1, 1]
    zoom = 1 + signed[:, 3] * spec.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates, so this is the inverse of "zoom, rotate, shift".
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    if spec.hflip:  # a mirrored image reads its input from the other side: x -> -x
        mirror = torch.where(uniforms[:, 5] < 0.5, -1.0, 1.0).to(rotation.dtype)
        rotation = rotation * torch.stack([mirror, torch.ones_like(mirror)], -1).unsqueeze(-2)
    offset = -(rotation @ shift.unsqueeze(-1))
    theta = torch.cat([rotation, offset], dim=-1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return erase(moved, uniforms, spec.erasing)


ERASE_AREA = (0.02, 0.4)  # of the image, Zhong et al.'s defaults
ERASE_ASPECT = 0.3  # height over width from 0.3 to 1 / 0.3, log-uniform


def erase(images: Tensor, uniforms: Tensor, probability: float) -> Tensor:
    """Paint a rectangle of each drawn image one gray level, as a mask over the whole batch.

    By hand rather than torchvision's or timm's RandomErasing: those draw from Python's global
    random state one image at a time, and here every image's rectangle must depend only on
    (seed, epoch, index), like the rest of the augmentation (the teacher-logits cache relies on it).
    """
    if probability == 0:
        return images
    height, width = images.shape[-2:]
    chosen, area, aspect, left, top, gray = uniforms[:, 6:12].unbind(1)
    area = (ERASE_AREA[0] + area * (ERASE_AREA[1] - ERASE_AREA[0])) * height * width
    ratio = torch.exp((aspect * 2 - 1) * math.log(1 / ERASE_ASPECT))
    h = torch.sqrt(area * ratio).round().clamp(1, height)
    w = torch.sqrt(area / ratio).round().clamp(1, width)
    top, left = (top * (height - h + 1)).floor(), (left * (width - w + 1)).floor()
    mask = boxes(images, top, top + h, left, left + w, chosen < probability)
    return torch.where(mask, gray.view(-1, 1, 1, 1).to(images.dtype), images)


def boxes(images: Tensor, top: Tensor, bottom: Tensor, left: Tensor, right: Tensor,
          drawn: Tensor) -> Tensor:
    """(B, 1, H, W) mask of each drawn image's rectangle [top, bottom) x [left, right)."""
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device).view(1, -1)
    cols = torch.arange(width, device=images.device).view(1, -1)
    inside_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return (inside_rows[:, :, None] & inside_cols[:, None, :] & drawn[:, None, None])[:, None]


def cutmix(images: Tensor, uniforms: Tensor, probability: float) -> tuple[Tensor, Tensor]:
    """Paste into each drawn image of a (B, C, H, W) batch a rectangle of the image before it in
    the batch (the batches are shuffled), as Yun et al.'s reference code draws it: a box of
    sides sqrt(area) of the image's, centred anywhere, cut off at the borders. Returns the
    images and each one's own share of the pixels (1 where nothing was pasted).

    By hand rather than timm's Mixup for the reason `erase` gives."""
    height, width = images.shape[-2:]
    chosen, area, centre_x, centre_y = uniforms[:, 12:16].unbind(1)
    half_h = (area.sqrt() * height / 2).floor()
    half_w = (area.sqrt() * width / 2).floor()
    centre_y, centre_x = (centre_y * height).floor(), (centre_x * width).floor()
    top, bottom = (centre_y - half_h).clamp(0, height), (centre_y + half_h).clamp(0, height)
    left, right = (centre_x - half_w).clamp(0, width), (centre_x + half_w).clamp(0, width)
    drawn = chosen < probability
    pasted = torch.where(drawn, (bottom - top) * (right - left) / (height * width), 0.0)
    mask = boxes(images, top, bottom, left, right, drawn)
    return torch.where(mask, images.roll(1, dims=0), images), 1 - pasted
