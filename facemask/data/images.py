"""Read any image file the same way everywhere: training, evaluation and prediction."""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# Transparent pixels are composited onto this: mid grey says "nothing here" to a CNN
# without adding the strong edge a black or white background would draw around a face.
BACKGROUND = (128, 128, 128)
# Formats PIL calls by names other than their usual suffix.
SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}

# A truncated file must fail, not decode with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image file that cannot be used; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str  # the file's own mode, before conversion to RGB


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency onto grey."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: stretch to 0..255 instead of clipping everything
        # above 255 to white, which is what a plain convert("L") does.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(
    path: str | os.PathLike, draft_size: int | None = None, max_pixels: int | None = None
) -> tuple[Image.Image, ImageInfo]:
    """Open, fully decode, apply EXIF orientation and convert to RGB.

    `draft_size` lets the JPEG decoder scale down by up to 8x while decoding, which is
    most of the cost for multi-megapixel photos that end up at 224 px anyway. The
    whole file is still read, so truncation is still caught. Raises ImageError with
    the reason for anything unusable.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror}") from err
    if not stat.S_ISREG(st.st_mode):
        # A folder or FIFO would otherwise reach PIL and come back as "corrupt" (or block).
        kind = "is a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ImageError(f"cannot read file: {kind}")
    if st.st_size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        # Opened here, not by PIL, so that a permission error reads as one and not as
        # "corrupt or truncated" (PIL raises both as OSError).
        fh = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror}") from err
    with fh, warnings.catch_warnings():
        # PIL only warns between max_pixels and twice that; treat both as bombs.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old_limit = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with Image.open(fh) as img:
                info = ImageInfo(img.width, img.height, img.format or "?", img.mode)
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                rgb = to_rgb(ImageOps.exif_transpose(img))
        except UnidentifiedImageError as err:
            raise ImageError("not an image PIL can identify") from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"decompression bomb: {err}") from err
        except OSError as err:
            # PIL reports truncated and corrupt data as OSError ("image file is truncated",
            # "broken data stream", ...).
            raise ImageError(f"corrupt or truncated: {err}") from err
        except (SyntaxError, ValueError, TypeError, EOFError) as err:
            raise ImageError(f"corrupt image data: {err}") from err
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    return rgb, info


def resize_square(img: Image.Image, size: int) -> np.ndarray:
    """Squash to size x size (uint8 HWC).

    Face crops are squashed, not centre-cropped: a centre crop of a tall crop cuts
    off the chin, which is exactly where a mask sits.
    """
    return np.asarray(
        img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0), dtype=np.uint8
    )


def load_array(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode an image file into a size x size RGB uint8 array."""
    img, _ = open_image(path, draft_size=size)
    return resize_square(img, size)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def suffix_matches(path: Path, fmt: str) -> bool:
    """Does the file name's suffix agree with the format found inside?"""
    suffix = path.suffix.lower()
    return SUFFIX_FORMATS.get(suffix, suffix.lstrip(".").upper()) == fmt
