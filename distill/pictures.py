"""How distill reads a user's pictures, in a folder, for `distill predict` and in the demo:
HEIC as well as JPEG and PNG, upright as a phone's EXIF tag says, a JPEG at the scale it needs,
within a limit on pixels checked before decoding. PIL and numpy only: no torch, so that the
worker processes that decode a folder of photos start at once."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

# Larger images are refused before they are decoded (a JPEG is first read at 1/2 to 1/8 of its
# scale where that fits): a small compressed file can claim billions (a decompression bomb). A
# phone's 24- or 48-megapixel photo, 72 or 144 MB decoded, is read; a HEIC is read from the
# thumbnail a phone embeds in it where that is large enough, else in full.
MAX_PIXELS = 8192 * 8192


@lru_cache(maxsize=1)
def read_heic() -> None:
    """HEIC, the format of an iPhone's photos, through pillow-heif (PIL reads JPEG, PNG, ...)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


@contextmanager
def reading_pictures():
    """PIL as distill reads a user's pictures: HEIC too, and without PIL's own limit on pixels,
    which refuses a 200-megapixel photo on opening it: distill checks the pixels a file is read
    at instead (MAX_PIXELS), before decoding it."""
    from PIL import Image

    read_heic()
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def upright(image):
    """A PIL image turned as its EXIF orientation says: a phone stores a photo taken upright as
    sideways pixels and a tag, which PIL (and torchvision's ImageFolder) leave unapplied."""
    from PIL import ExifTags, ImageOps

    with warnings.catch_warnings():  # a damaged EXIF block: PIL warns, and the tag is not used
        warnings.simplefilter("ignore")
        if image.getexif().get(ExifTags.Base.Orientation, 1) in (0, 1):
            return image  # most files: no tag, and no copy
        return ImageOps.exif_transpose(image)


def draft(image, size: int, channels: int) -> None:
    """Have a JPEG decode straight at 1/2 to 1/8 of its scale, no smaller than `size`: a phone
    photo decodes 3-5 times as fast. The pixels differ from a full decode's by under a gray level
    on average (more along sharp edges), so the folder and `distill predict` both draft. A HEIC
    is read from its embedded thumbnail where one is a scaled copy at least `size` a side
    (pillow-heif's draft): an iPhone's of 320x240 in 10 ms against 0.75 s for its 12 megapixels
    here."""
    image.draft("L" if channels == 1 else "RGB", (size, size))


def within_pixels(image, most: int) -> None:
    """A JPEG of over `most` pixels (a camera's 24-megapixel photo) is read at 1/2 to 1/8 of its
    scale, under `most` where one of those scales gets it there; other images keep their size."""
    if (pixels := image.width * image.height) > most:
        # PIL takes the largest reduction that keeps at least the size asked for: asking for half
        # the size that would fit leaves a reduction at most that size.
        shrink = math.sqrt(most / pixels) / 2
        image.draft(None, (math.ceil(image.width * shrink), math.ceil(image.height * shrink)))


def eight_bit(image):
    """A PIL image of 8 bits a channel: a 16-bit scan (a microscope's, an X-ray's) or a float
    image scaled to 0-255 first, where PIL's own conversion clips their values to it (a 16-bit
    image of values 0-65535 turned all but white, a float one of 0-1 black)."""
    from PIL import Image

    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float32)
    # 16-bit data (PIL reads some 16-bit files as "I"); floats from 0 to 1, else gray levels
    full = 65535.0 if image.mode != "F" else 1.0 if values.size and values.max() <= 1 else 255.0
    return Image.fromarray(np.rint(values.clip(0, full) * (255 / full)).astype(np.uint8), "L")


def decode_image(image, size: int, channels: int) -> np.ndarray:
    """A PIL image as the folder's images are decoded: (size, size) or (size, size, 3) uint8.
    `distill predict` and the demo fit a user's picture to a folder network the same way."""
    from PIL import Image

    image = eight_bit(image).convert("L" if channels == 1 else "RGB").resize((size, size),
                                                                         Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


UNREADABLE, TOO_LARGE = "unreadable", "too large"


def decode_file(job: tuple[str, int, int]) -> np.ndarray | str:
    """One file (path, size, channels) as the folder's images are decoded, or why it is not
    (UNREADABLE, TOO_LARGE). Runs in worker processes for a folder of photos: this module
    imports no torch, so that they start in a fraction of a second."""
    from PIL import Image

    path, size, channels = job
    try:
        with reading_pictures(), Image.open(path) as image:
            draft(image, size, channels)  # a JPEG is read at the scale it needs
            if image.width * image.height > MAX_PIXELS:
                return TOO_LARGE
            return decode_image(upright(image), size, channels)
    except Exception:  # noqa: BLE001 - any unreadable file is skipped, and counted by the caller
        return UNREADABLE
