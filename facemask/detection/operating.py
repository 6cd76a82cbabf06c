"""Operating points read off the valid scenes: a detector's boxes at every score threshold
(stages train_detector and fusion), and the rule that picks one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from facemask.detection.finders import Detection, FaceDetector

Found = tuple[np.ndarray, np.ndarray]  # boxes (D, 4) xyxy, scores (D,)


def as_arrays(found: Sequence[Detection]) -> Found:
    """A detector's answer for one picture as (boxes, scores) arrays."""
    boxes = np.array([b for b, _ in found], dtype=np.float64).reshape(-1, 4)
    return boxes, np.array([s for _, s in found], dtype=np.float64)


def detect_scenes(detector: FaceDetector, pictures: Iterable[np.ndarray]) -> list[Found]:
    """(boxes, scores) per picture at the detector's current threshold."""
    return [as_arrays(detector.detect(rgb)) for rgb in pictures]


def threshold_sweep(
    found: Sequence[Found], truths: Sequence[np.ndarray], thresholds: Sequence[float],
    iou: float = 0.5,
) -> list[dict]:  # fmt: skip
    """Face recall, precision, F1 and false boxes per scene (one-to-one matches at `iou`)
    at each detector-score threshold."""
    from facemask.detection.scoring import match_boxes

    rows = []
    faces = sum(len(t) for t in truths)
    for t in thresholds:
        hits = kept = 0
        for (boxes, scores), truth in zip(found, truths, strict=True):
            keep = scores >= t
            hits += len(match_boxes(truth, boxes[keep], scores[keep], iou))
            kept += int(keep.sum())
        recall = hits / faces if faces else 0.0
        precision = hits / kept if kept else 0.0
        f1 = 2 * recall * precision / (recall + precision) if hits else 0.0
        rows.append(
            {
                "threshold": t,
                "recall": round(recall, 4),
                "precision": round(precision, 4),
                "f1": round(f1, 4),
                "false_boxes_per_scene": round((kept - hits) / max(1, len(found)), 3),
            }
        )
    return rows


def most_found_within(rows: Sequence[dict], false_boxes: float) -> dict | None:
    """The row with the highest recall (then precision) among those with no more false boxes
    a scene than `false_boxes`; None if every row has more."""
    within = [r for r in rows if r["false_boxes_per_scene"] <= false_boxes]
    return max(within, key=lambda r: (r["recall"], r["precision"]), default=None)
