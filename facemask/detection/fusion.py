"""Two or more face detectors as one: their boxes joined by weighted box fusion
(`ensemble-boxes`): overlapping boxes average into one, weighted by score, and a box only
one detector found keeps its score times the share of detectors that found it. And one
detector at several enlargements, or on overlapping tiles of a large photo, its boxes joined
by non-maximum suppression. Stage fusion
picks the fused detector's settings with `fusion_sweep`: the members' boxes fused at every
IoU and scored at every threshold, each member run once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facemask.detection.finders import Detection, FaceDetector, as_box
from facemask.detection.operating import as_arrays, threshold_sweep


def fuse_boxes(
    found: Sequence[Sequence[Detection]], shape: tuple[int, ...], iou: float,
    weights: Sequence[float] | None = None,
) -> list[Detection]:  # fmt: skip
    """Every member's boxes on one picture of `shape` (H, W, ...) fused, best first."""
    from ensemble_boxes import weighted_boxes_fusion

    h, w = shape[:2]
    scale = np.array([w, h, w, h], dtype=np.float64)
    boxes, scores = [], []
    for f in found:
        b = np.clip(np.array([d[0] for d in f], np.float64).reshape(-1, 4) / scale, 0, 1)
        s = np.array([d[1] for d in f], dtype=np.float64)
        # A box clipped to nothing at the picture's edge: WBF would skip it with a warning.
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        boxes.append(b[keep])  # WBF works in 0-1 coordinates
        scores.append(s[keep])
    labels = [np.zeros(len(s)) for s in scores]
    if not any(len(x) for x in scores):
        return []
    weights = list(weights) if weights is not None else [1.0] * len(found)
    fused, fused_scores, _ = weighted_boxes_fusion(
        boxes, scores, labels, weights=weights, iou_thr=iou
    )
    out = [(as_box(b * scale), float(s)) for b, s in zip(fused, fused_scores, strict=True)]
    return sorted(out, key=lambda d: -d[1])


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
        found = [m.detect(rgb) for m in self.members]
        fused = fuse_boxes(found, rgb.shape, self.iou, self.weights)
        return [d for d in fused if d[1] >= self.threshold]

    def close(self) -> None:
        for m in self.members:
            if hasattr(m, "close"):
                m.close()


def suppress(found: Sequence[Detection], iou: float) -> list[Detection]:
    """Non-maximum suppression: boxes overlapping a better one by IoU > `iou` go; the rest
    by falling score."""
    import torch
    from torchvision.ops import nms

    if not found:
        return []
    boxes = torch.tensor([d[0] for d in found], dtype=torch.float64)
    scores = torch.tensor([d[1] for d in found], dtype=torch.float64)
    return [found[i] for i in nms(boxes, scores, iou).tolist()]


class MultiScaleDetector:
    """One detector run at several enlargements of the picture (`members`, one per scale):
    every box kept, overlaps (IoU > `nms_iou`) left to the highest score, as the detector's
    own NMS does within one scale."""

    def __init__(self, members: Sequence[FaceDetector], nms_iou: float = 0.5) -> None:
        if not members:
            raise ValueError("a multi-scale detector needs one scale or more")
        self.members, self.nms_iou = list(members), nms_iou
        self.threshold = min(getattr(m, "threshold", 0.0) for m in self.members)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return suppress([d for m in self.members for d in m.detect(rgb)], self.nms_iou)

    def close(self) -> None:
        for m in self.members:
            if hasattr(m, "close"):
                m.close()


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles `tile` px long that cover `length` px, neighbours sharing at least
    `overlap` px; the last one ends at the edge."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


class TiledDetector:
    """A detector on a picture larger than `tile` px: once on the whole picture (which it
    shrinks to its size cap: the large faces), then on overlapping tiles at full resolution
    (the small faces a shrunk photo loses), the boxes joined by NMS (`merge="nms"`) or by
    weighted box fusion (`merge="wbf"`: overlapping boxes averaged). A box touching a tile's
    inner edge is dropped: the face is cut there, and the neighbour, `overlap` px further,
    holds it whole if it is smaller than the overlap; larger ones the whole-picture pass finds.
    Tiles run one at a time, so memory follows the tile, not the photo."""

    def __init__(
        self, base: FaceDetector, tile: int, overlap: int = 256, nms_iou: float = 0.5,
        edge: float = 2.0, merge: str = "nms",
    ) -> None:  # fmt: skip
        if not 0 <= overlap < tile:
            raise ValueError(f"tiles of {tile} px cannot overlap by {overlap} px")
        if merge not in ("nms", "wbf"):
            raise ValueError(f"tiles merge by nms or wbf, not {merge!r}")
        self.merge = merge
        self.base, self.tile, self.overlap, self.nms_iou, self.edge = (
            base,
            tile,
            overlap,
            nms_iou,
            edge,
        )
        self.threshold = getattr(base, "threshold", 0.0)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        found = list(self.base.detect(rgb))
        if max(h, w) <= self.tile:
            return found
        for y0 in tile_origins(h, self.tile, self.overlap):
            for x0 in tile_origins(w, self.tile, self.overlap):
                part = rgb[y0 : y0 + self.tile, x0 : x0 + self.tile]
                ph, pw = part.shape[:2]
                for (bx0, by0, bx1, by1), score in self.base.detect(part):
                    cut = (
                        (x0 > 0 and bx0 <= self.edge) or (y0 > 0 and by0 <= self.edge)
                        or (x0 + pw < w and bx1 >= pw - self.edge)
                        or (y0 + ph < h and by1 >= ph - self.edge)
                    )  # fmt: skip
                    if not cut:
                        found.append(((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), score))
        if self.merge == "wbf":
            return fuse_boxes([found], rgb.shape, self.nms_iou)
        return suppress(found, self.nms_iou)

    def close(self) -> None:
        if hasattr(self.base, "close"):
            self.base.close()


def fusion_sweep(
    members: Sequence[Sequence[Sequence[Detection]]], shapes: Sequence[tuple[int, ...]],
    truths: Sequence[np.ndarray], ious: Sequence[float], thresholds: Sequence[float],
) -> list[dict]:  # fmt: skip
    """threshold_sweep's rows, with their `iou`, for the members' boxes (`members[scene]
    [member]`, as each member found them) fused at every IoU of `ious`."""
    rows = []
    for iou in ious:
        fused = [
            as_arrays(fuse_boxes(found, shape, iou))
            for found, shape in zip(members, shapes, strict=True)
        ]
        rows += [{"iou": iou, **r} for r in threshold_sweep(fused, truths, thresholds)]
    return rows
