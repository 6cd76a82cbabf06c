"""Face landmarks and the face frame masks and occluders are placed in.

The landmarks come from dlib's 5-point shape predictor (dlib-bin's prebuilt dlib, the model
file from `face_recognition_models`; the model is public domain / CC0, dlib is under the Boost
licence). It needs a face box, which the crops already give: a box-annotated source's crop is
the box grown by `prepare.crop_margin`, a folder picture is searched with YuNet.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Landmarks:
    """Eye centres (the one on the picture's left first) and the base of the nose, in pixels."""

    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    nose: tuple[float, float]


class FaceFrame:
    """Coordinates on a face: `u` across in eye distances (0 between the eyes, +1 one eye
    distance towards the picture's right), `v` down in eye-to-nose heights (0 at the eyes, 1 at
    the base of the nose). Anthropometric rules of thumb put the mouth near v = 1.45, the chin
    near v = 2.3 and the cheeks' edges near u = +-1."""

    MOUTH = 1.45
    CHIN = 2.3

    def __init__(self, lm: Landmarks) -> None:
        el, er, nose = (
            np.asarray(p, dtype=np.float64) for p in (lm.eye_left, lm.eye_right, lm.nose)
        )
        self.origin = (el + er) / 2
        self.nose_point = nose
        across = er - el
        self.eye_distance = float(np.hypot(*across))
        if self.eye_distance < 1e-6:
            raise ValueError("landmarks: the two eyes are at the same point")
        self.ex = across / self.eye_distance
        ey = np.array([-self.ex[1], self.ex[0]])  # image y points down: this is "down the face"
        height = float((nose - self.origin) @ ey)
        if height <= 0:
            raise ValueError("landmarks: the nose is not below the eyes")
        self.ey, self.height = ey, height
        # How far the nose sits off the eyes' midline: the head's turn, in eye distances.
        self.turn = float((nose - self.origin) @ self.ex) / self.eye_distance

    def point(self, u: float, v: float) -> np.ndarray:
        """Pixel (x, y) of face coordinates (u, v)."""
        return self.origin + self.ex * (u * self.eye_distance) + self.ey * (v * self.height)

    def points(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return (
            self.origin
            + np.outer(uv[:, 0] * self.eye_distance, self.ex)
            + np.outer(uv[:, 1] * self.height, self.ey)
        )

    def scaled(self, scale: float) -> FaceFrame:
        """The same face in a picture enlarged `scale` times."""
        return FaceFrame(
            Landmarks(
                tuple(self.point(-0.5, 0) * scale),
                tuple(self.point(0.5, 0) * scale),
                tuple(self.nose_point * scale),
            )
        )

    @property
    def angle(self) -> float:
        """Roll of the eye line, degrees (positive: clockwise on screen)."""
        return float(np.degrees(np.arctan2(self.ex[1], self.ex[0])))


def model_path() -> Path:
    """dlib's 5-point model inside `face_recognition_models`, found without importing that
    package (its __init__ needs pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "synthesize: the landmark model is missing"
            " (pip install face_recognition_models dlib-bin)"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "models"
        / "shape_predictor_5_face_landmarks.dat"
    )
    if not path.is_file():
        raise RuntimeError(
            f"synthesize: {path} is missing (a broken face_recognition_models install)"
        )
    return path


@cache
def _predictor():
    import dlib

    return dlib.shape_predictor(str(model_path()))


def find_landmarks(rgb: np.ndarray, box: Box) -> Landmarks:
    """The 5 points in `box` of an RGB uint8 picture, as eye centres and the nose base."""
    import dlib

    x0, y0, x1, y1 = (round(c) for c in box)
    shape = _predictor()(np.ascontiguousarray(rgb), dlib.rectangle(x0, y0, x1, y1))
    pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
    # dlib's order: the outer and inner corner of one eye, then of the other, then the nose.
    eyes = sorted([pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)], key=lambda p: p[0])
    return Landmarks(tuple(eyes[0]), tuple(eyes[1]), tuple(pts[4]))


def crop_face_box(width: int, height: int, margin: float) -> Box:
    """The labelled box inside a crop cut with `margin` (x the box's longer side, each side)."""
    mx, my = width * margin / (1 + 2 * margin), height * margin / (1 + 2 * margin)
    return (mx, my, width - mx, height - my)


def plausible(lm: Landmarks, box: Box) -> bool:
    """Landmarks a face of this box could have: eyes apart by 20-70 % of the box width, the
    nose below them and inside the box. The predictor always answers; this catches the
    answers for boxes with no face, or one seen from the side."""
    try:
        frame = FaceFrame(lm)
    except ValueError:
        return False
    w = box[2] - box[0]
    x, y = lm.nose
    inside = box[0] <= x <= box[2] and box[1] <= y <= box[3]
    return 0.2 * w <= frame.eye_distance <= 0.7 * w and abs(frame.turn) < 0.45 and inside
