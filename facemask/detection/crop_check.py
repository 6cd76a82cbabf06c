"""Is there a face in this crop? A finder run on a picture already cut around one face.

`facemask predict --crops` classifies whole pictures; without a look, a flat colour or noise
gets a class too. The crop is enlarged (or shrunk) to `side` px and padded with grey by `pad`
x its size on each side, so a face that fills the crop has the context a finder expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facemask.detection.finders import FaceDetector


@dataclass
class CropCheck:
    detector: FaceDetector
    side: int
    pad: float

    def holds_face(self, rgb: np.ndarray) -> bool:
        return bool(self.detector.detect(padded(rgb, self.side, self.pad)))

    def close(self) -> None:
        if hasattr(self.detector, "close"):
            self.detector.close()


def padded(rgb: np.ndarray, side: int, pad: float) -> np.ndarray:
    """`rgb` with its longer side at `side` px, on a grey margin of `pad` x its size."""
    img = Image.fromarray(rgb).convert("RGB")
    scale = side / max(img.size)
    img = img.resize(
        (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
        Image.Resampling.BILINEAR,
    )
    pw, ph = round(img.width * pad), round(img.height * pad)
    canvas = Image.new("RGB", (img.width + 2 * pw, img.height + 2 * ph), (127, 127, 127))
    canvas.paste(img, (pw, ph))
    return np.asarray(canvas)
