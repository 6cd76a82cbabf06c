"""The Python API: load a trained model once, then answer pictures or camera frames.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from facemask.models.factory import ModelCard, create_model, save_model
>>> net, _ = create_model("facemask_cnn", 2, pretrained=False)
>>> card = ModelCard("facemask_cnn", ["with_mask", "without_mask"], 32, (0.5,) * 3, (0.25,) * 3)
>>> path = Path(tempfile.mkdtemp()) / "model.safetensors"
>>> save_model(net, card, path)
>>> model = load(path, detector=None)  # every picture is one face crop
>>> faces = model.predict([np.full((40, 40, 3), 128, np.uint8)])
>>> len(faces), len(faces[0]), faces[0][0].label in model.classes + ["uncertain"]
(1, 1, True)
>>> round(float(faces[0][0].probs.sum()), 3)
1.0

With a detector (the default, as `facemask predict` uses it), each picture is a frame and
gives one `Face` per detected face: its box, detector score, class probabilities, label.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath

import numpy as np
from PIL import Image

from facemask.data.images import ImageError, open_image
from facemask.detection.factory import face_finder
from facemask.serving.engines import load_engine
from facemask.serving.inputs import Frame
from facemask.serving.stream import Face, answer_frames

Picture = str | os.PathLike | Image.Image | np.ndarray

# prepare.crop_margin's value, for model cards written before they carried their own
DEFAULT_MARGIN = 0.2


def card_margin(card, margin: float | None = None) -> float:
    """The crop margin to cut detected faces with: `margin` if given, else the model card's
    (what training cropped with), else DEFAULT_MARGIN."""
    if margin is not None:
        return margin
    return DEFAULT_MARGIN if card.crop_margin is None else card.crop_margin


class FaceMaskModel:
    """A loaded classifier (and face detector) with the serving chain's crop rules."""

    def __init__(self, engine, detector, margin: float, batch_size: int) -> None:
        self.engine, self.detector = engine, detector
        self.margin, self.batch_size = margin, batch_size

    @property
    def classes(self) -> list[str]:
        return list(self.engine.card.classes)

    def predict(self, pictures: Iterable[Picture]) -> list[list[Face]]:
        """One list of faces per picture (file path, PIL image or RGB uint8 array), in order;
        a face's label is `uncertain` below the model card's abstain threshold."""
        frames = (Frame(str(i), PurePath(str(i)), _rgb(p)) for i, p in enumerate(pictures))
        answers = answer_frames(
            frames,
            self.engine,
            self.detector,
            self.margin,
            self.batch_size,
            getattr(self.engine.card, "abstain", 0.0),
            keep_images=False,
        )
        return [a.faces for a in answers]


def _rgb(picture: Picture) -> np.ndarray:
    if isinstance(picture, np.ndarray):
        if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
            raise ValueError(f"an array picture must be HxWx3 uint8, not {picture.shape}")
        return picture
    if isinstance(picture, Image.Image):
        return np.asarray(picture.convert("RGB"))
    try:
        img, _ = open_image(Path(picture))  # EXIF-rotated RGB
    except ImageError as err:
        raise ImageError(f"{picture}: {err}") from None
    return np.asarray(img)


def load(
    model: str | os.PathLike,
    engine: str = "torch",
    detector: str | None = "finder",
    threshold: float | None = None,
    upscale: float | None = None,
    margin: float | None = None,
    batch_size: int = 64,
    finder: str | os.PathLike | None = None,
) -> FaceMaskModel:
    """The model at `model` (.safetensors for torch, .onnx for onnx) ready to answer.

    `detector`: `finder` (the finder file `finder`, default finder.json beside `model`: the
    detector and operating point `dvc repro` chose, as `facemask predict` runs it), or a
    name, a trained detector's file or several joined by `+` (at the finder file's settings
    where it names that detector); None: each picture is already a face crop. `threshold`
    and `upscale`: None = the finder file's (a trained detector's own).
    `margin` is the context added around a detected face; None = the model card's.
    """
    loaded = load_engine(model, engine, batch_size=batch_size)  # a bad model file first
    found = None
    if detector is not None:
        name = None if detector == "finder" else detector
        found = face_finder(model, name, finder, threshold=threshold, upscale=upscale)
    return FaceMaskModel(loaded, found, card_margin(loaded.card, margin), batch_size)
