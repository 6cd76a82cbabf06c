"""Pictures of the answers: a box, label and confidence per face, coloured by class."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

UNCERTAIN = "uncertain"
# Green for a mask, red for none, amber for one worn wrong; grey: below the abstain threshold.
CLASS_COLOURS = {
    "with_mask": (40, 200, 80),
    "without_mask": (230, 40, 40),
    "mask_worn_incorrectly": (250, 170, 20),
    UNCERTAIN: (160, 160, 160),
}
OTHER_COLOURS = [(60, 120, 240), (200, 60, 220), (30, 200, 210), (240, 120, 170)]


def class_colour(label: str, classes: Sequence[str] = ()) -> tuple[int, int, int]:
    """The colour of a class: a fixed one for the known classes, else by its position."""
    if label in CLASS_COLOURS:
        return CLASS_COLOURS[label]
    i = list(classes).index(label) if label in classes else len(label)
    return OTHER_COLOURS[i % len(OTHER_COLOURS)]


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_faces(
    image: Image.Image | np.ndarray,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str],
    confidences: Sequence[float],
    classes: Sequence[str] = (),
) -> Image.Image:
    """A copy of the picture with each face's box and `label 97%` above it."""
    img = (image if isinstance(image, Image.Image) else Image.fromarray(image)).convert("RGB")
    img = img.copy()
    draw = ImageDraw.Draw(img)
    side = max(img.size)
    width = max(1, round(side / 320))  # lines and text grow with the picture
    font = _font(max(10, round(side / 45)))
    for box, label, conf in zip(boxes, labels, confidences, strict=True):
        colour = class_colour(label, classes)
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{label} {conf:.0%}"
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0 + 2 * width, ty1 - ty0 + 2 * width
        # Above the box where there is room, else inside its top edge.
        ty = y0 - th if y0 - th >= 0 else y0
        tx = min(max(0.0, x0), max(0.0, img.width - tw))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        draw.text((tx + width - tx0, ty + width - ty0), text, fill=(0, 0, 0), font=font)
    return img


def tile_images(images: Sequence[Image.Image], columns: int = 3, width: int = 480) -> Image.Image:
    """Pictures side by side in rows, each scaled to `width` px wide (a gallery)."""
    scaled = [im.resize((width, max(1, round(im.height * width / im.width)))) for im in images]
    if not scaled:
        return Image.new("RGB", (width, width // 2), (255, 255, 255))
    columns = max(1, min(columns, len(scaled)))
    rows = [scaled[i : i + columns] for i in range(0, len(scaled), columns)]
    heights = [max(im.height for im in row) for row in rows]
    pad = 4
    out = Image.new(
        "RGB", (columns * (width + pad) + pad, sum(heights) + pad * (len(rows) + 1)), "white"
    )
    y = pad
    for row, h in zip(rows, heights, strict=True):
        for j, im in enumerate(row):
            out.paste(im, (pad + j * (width + pad), y))
        y += h + pad
    return out
