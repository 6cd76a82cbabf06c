"""Learned box refinement (stage refine of detect/dvc.yaml): a detector whose boxes sit off
the annotators' (YuNet's sit higher than andrewmvd's: metrics/detect/refine.json) gets each
side moved by an offset, in box widths or heights, fitted by least squares on [1, log side,
score] over its boxes matched to labelled faces. mAP@0.5 punishes such a systematic offset;
recall at IoU 0.3 hardly sees it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from facemask.detection.finders import Detection, FaceDetector, as_box
from facemask.detection.scoring import SceneResult, box_iou, map50, match_boxes

TERMS = ("bias", "log side", "score")  # the columns of design()
SIDES = ("x0", "y0", "x1", "y1")


def design(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(D, 3): 1, log of the box's side (geometric mean of width and height), score."""
    side = np.sqrt(np.clip((boxes[:, 2:] - boxes[:, :2]).prod(1), 1, None))
    return np.stack([np.ones(len(boxes)), np.log(side), scores], 1)


def matched_pairs(results: Sequence[SceneResult], iou_min: float) -> tuple[np.ndarray, ...]:
    """Detections matched one-to-one to labelled faces at IoU >= `iou_min`, stacked over
    scenes: (boxes (M, 4), scores (M,), truth (M, 4), IoU (M,))."""
    parts: list[tuple[np.ndarray, ...]] = []
    for r in results:
        pairs = match_boxes(r.truth, r.boxes, r.scores, iou_min)
        if pairs:
            g, d = np.array(pairs).T
            parts.append((r.boxes[d], r.scores[d], r.truth[g], box_iou(r.truth, r.boxes)[g, d]))
    if not parts:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), np.zeros(0)
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


@dataclass
class BoxRefiner:
    """Side offsets for one detector's boxes: `weights` (3, 4) maps design() to (x0, y0, x1,
    y1) offsets in box widths / heights. `detector`: the settings it was fitted on."""

    weights: np.ndarray
    detector: dict = field(default_factory=dict)
    pairs: int = 0  # matched boxes it was fitted on

    def offsets(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(D, 4) side offsets in box widths / heights."""
        return design(boxes, np.asarray(scores, np.float64)) @ self.weights

    def apply(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The boxes moved; a box keeps at least one pixel a side."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return boxes
        scale = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        out = boxes + self.offsets(boxes, scores) * scale
        out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1)
        return out

    def save(self, path: str | os.PathLike) -> None:
        body = {
            "detector": self.detector,
            "pairs": self.pairs,
            "weights": {t: dict(zip(SIDES, map(float, w), strict=True))
                        for t, w in zip(TERMS, self.weights, strict=True)},
        }  # fmt: skip
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(body, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> BoxRefiner:
        try:
            body = json.loads(Path(path).read_text())
            weights = np.array([[body["weights"][t][s] for s in SIDES] for t in TERMS], float)
        except FileNotFoundError as err:
            raise ValueError(f"{path}: no such box refiner (dvc repro detect/dvc.yaml)") from err
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a box refiner file ({err!r})") from err
        return cls(weights, body.get("detector", {}), int(body.get("pairs", 0)))


def fit_box_refiner(
    results: Sequence[SceneResult], iou_min: float = 0.3, detector: dict | None = None
) -> BoxRefiner:
    """Least-squares side offsets from the detections matched at IoU >= `iou_min`."""
    boxes, scores, truth, _ = matched_pairs(results, iou_min)
    if len(boxes) < len(TERMS):
        raise ValueError(f"{len(boxes)} boxes on a labelled face: too few to fit offsets")
    target = (truth - boxes) / np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    weights = np.linalg.lstsq(design(boxes, scores), target, rcond=None)[0]
    return BoxRefiner(weights, dict(detector or {}), len(boxes))


def refine_results(results: Sequence[SceneResult], refiner: BoxRefiner) -> list[SceneResult]:
    """The scenes with every detection's box refined (scores and answers kept)."""
    return [replace(r, boxes=refiner.apply(r.boxes, r.scores)) for r in results]


class RefinedDetector:
    """A detector whose boxes `refiner` moves (then clipped to the picture)."""

    def __init__(self, member: FaceDetector, refiner: BoxRefiner) -> None:
        self.member, self.refiner = member, refiner

    def __getattr__(self, name: str):  # threshold, upscale, ...: the member's
        if name == "member":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.member, name)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        found = self.member.detect(rgb)
        if not found:
            return found
        boxes = np.array([b for b, _ in found], np.float64)
        scores = np.array([s for _, s in found], np.float64)
        h, w = rgb.shape[:2]
        moved = np.clip(self.refiner.apply(boxes, scores), 0, [w, h, w, h])
        return [(as_box(b), s) for b, (_, s) in zip(moved, found, strict=True)]

    def close(self) -> None:
        if hasattr(self.member, "close"):
            self.member.close()


def box_scores(results: Sequence[SceneResult], iou_min: float) -> dict:
    """How well the boxes sit on the labelled faces (one class: face)."""
    _, _, _, iou = matched_pairs(results, iou_min)
    faces = sum(len(r.truth) for r in results)
    at_half = sum(len(match_boxes(r.truth, r.boxes, r.scores, 0.5)) for r in results)
    as_faces = [
        replace(r, names=["face"] * len(r.truth), probs=np.ones((len(r.boxes), 1))) for r in results
    ]
    return {
        "matched": len(iou),
        "mean_iou": round(float(iou.mean()), 4) if len(iou) else None,
        "faces_at_iou_0.5": round(at_half / faces, 4) if faces else None,
        "face_ap50": map50(as_faces, {"face": "face"}, ["face"])["mean"],
    }
