"""Two or more face detectors as one: their boxes joined by weighted box fusion
(`ensemble-boxes`): overlapping boxes average into one, weighted by score, and a box only
one detector found keeps its score times the share of detectors that found it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facemask.serving.detect import Detection, FaceDetector


class FusedDetector:
    """`detect` runs every member on the picture and fuses their boxes (IoU >= `iou`)."""

    def __init__(
        self, members: Sequence[FaceDetector], weights: Sequence[float] | None = None,
        iou: float = 0.5, threshold: float = 0.0,
    ) -> None:  # fmt: skip
        if len(members) < 2:
            raise ValueError("fusion needs two detectors or more")
        self.members, self.iou, self.threshold = list(members), iou, threshold
        self.weights = list(weights) if weights is not None else [1.0] * len(members)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        from ensemble_boxes import weighted_boxes_fusion

        h, w = rgb.shape[:2]
        scale = np.array([w, h, w, h], dtype=np.float64)
        boxes, scores, labels = [], [], []
        for m in self.members:
            found = m.detect(rgb)
            b = np.array([d[0] for d in found], dtype=np.float64).reshape(-1, 4) / scale
            boxes.append(np.clip(b, 0, 1))  # WBF works in 0-1 coordinates
            scores.append(np.array([d[1] for d in found], dtype=np.float64))
            labels.append(np.zeros(len(found)))
        if not any(len(s) for s in scores):
            return []
        fused, fused_scores, _ = weighted_boxes_fusion(
            boxes, scores, labels, weights=self.weights, iou_thr=self.iou
        )
        out = [
            (tuple(float(v) for v in b * scale), float(s))
            for b, s in zip(fused, fused_scores, strict=True)
            if s >= self.threshold
        ]
        return sorted(out, key=lambda d: -d[1])

    def close(self) -> None:
        for m in self.members:
            if hasattr(m, "close"):
                m.close()
