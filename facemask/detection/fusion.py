"""The fused detector's settings (stage fusion): the members' boxes fused at every IoU and
scored at every threshold, each member run once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facemask.detection.operating import as_arrays, threshold_sweep
from facemask.serving.detect import Detection
from facemask.serving.fusion import fuse_boxes


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
