"""Face crops from detected boxes, cut exactly as the training crops were cut from VOC boxes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from facemask.data.images import resize_square
from facemask.data.voc import Box, square_crop_box

# A crop narrower than this is a sliver at the picture's edge, not a face.
MIN_CROP = 2


def crop_box(
    box: Sequence[float], width: int, height: int, margin: float
) -> tuple[int, int, int, int]:
    """The training crop around a face box (xyxy): square, `margin` x its longer side added."""
    return square_crop_box(Box("", *map(float, box)), width, height, margin)


def face_crops(
    image: Image.Image | np.ndarray, boxes: Sequence[Sequence[float]], margin: float, size: int
) -> np.ndarray:
    """(N, size, size, 3) uint8: each box's training crop, squashed to the model's size."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = crop_box(box, img.width, img.height, margin)
        if x1 - x0 >= MIN_CROP and y1 - y0 >= MIN_CROP:
            out[i] = resize_square(img.crop((x0, y0, x1, y1)), size)
    return out
