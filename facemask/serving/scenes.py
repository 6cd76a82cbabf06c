"""The serving chain (finder -> crop -> classifier) run on annotated scenes, as `facemask
predict` runs it, and scored by facemask.detection.scoring: the scenes stages and `facemask
evaluate-scenes` share it."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from facemask.data.images import open_image
from facemask.data.voc import Scene
from facemask.detection.factory import create_detector, create_finder, finder_name, read_finder
from facemask.detection.finders import FaceDetector, TunedDetector
from facemask.detection.fusion import FusedDetector, MultiScaleDetector, TiledDetector
from facemask.detection.scoring import SceneResult, scene_metrics, scene_pictures
from facemask.params import ScenesParams
from facemask.serving.annotate import draw_faces, tile_images
from facemask.serving.engines import Engine
from facemask.serving.inputs import Frame
from facemask.serving.stream import Rescorer, answer_frames


def write_curves(curves: Mapping[str, pd.DataFrame], folder: Path) -> None:
    """One precision-recall CSV per class into `folder` (a DVC plot), emptied first so that a
    class without faces this time leaves no stale file."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, frame in curves.items():
        frame.to_csv(folder / f"{name}.csv", index=False)


def scene_frames(
    scenes: Iterable[Scene], bad: list[str], light: dict[str, np.ndarray] | None = None
) -> Iterable[Frame]:
    """Each scene's picture as a frame (unreadable ones appended to `bad`); `light`, when
    given, gets each scene's labelled-face brightness."""
    for s, rgb in scene_pictures(scenes, bad, light):
        yield Frame(s.image.stem, Path(s.image.name), rgb)


def run_scenes(
    scenes: Sequence[Scene],
    engine: Engine,
    detector: FaceDetector,
    margin: float,
    batch_size: int = 64,
    abstain: float = 0.0,
    bad: list[str] | None = None,
    rescorer: Rescorer | None = None,
    keep_features: bool = False,
) -> list[SceneResult]:
    """The serving chain on every scene, as `facemask predict` runs it (with `rescorer`,
    boxes it calls no face are dropped and the rest scored by its face probability;
    `keep_features` keeps each box's pooled classifier features)."""
    bad = [] if bad is None else bad
    by_id = {s.image.stem: s for s in scenes}
    light: dict[str, np.ndarray] = {}
    frames = scene_frames(scenes, bad, light)
    out = []
    answers = answer_frames(
        frames, engine, detector, margin, batch_size, abstain, False, rescorer, keep_features
    )
    for answer in answers:
        scene = by_id[answer.frame.source]
        faces = answer.faces
        k = len(engine.card.classes)
        out.append(
            SceneResult(
                answer.frame.source,
                np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in scene.boxes]).reshape(-1, 4),
                [b.name for b in scene.boxes],
                np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4),
                np.array([f.rank_score for f in faces], dtype=np.float64),
                np.array([f.probs for f in faces], dtype=np.float64).reshape(-1, k),
                [f.label for f in faces],
                light.get(answer.frame.source),
                np.array([f.features for f in faces]) if keep_features else None,
            )
        )
    return out


def evaluate_scenes(
    scenes: Sequence[Scene],
    engine: Engine,
    detector: FaceDetector,
    class_map: Mapping[str, str],
    margin: float,
    batch_size: int = 16,
    abstain: float = 0.0,
    iou_min: float = 0.5,
    min_face: float = 32,
    size_edges: Sequence[float] = (16, 32, 64),
    bad: list[str] | None = None,
    curves: dict[str, pd.DataFrame] | None = None,
    rescorer: Rescorer | None = None,
) -> tuple[list[SceneResult], dict]:
    """The chain on `scenes` and every metric of metrics/scenes.json (the scenes stage and
    `facemask evaluate-scenes` share it); `bad` lists what could not be read; `rescorer`:
    the no-face re-scorer's second look at every box."""
    import time

    bad = [] if bad is None else bad
    t0 = time.perf_counter()
    results = run_scenes(scenes, engine, detector, margin, batch_size, abstain, bad, rescorer)
    seconds = time.perf_counter() - t0
    classes = engine.card.classes
    metrics = {
        "model": engine.card.model,
        **scene_metrics(results, class_map, classes, iou_min, min_face, size_edges, curves),
        "unreadable": bad,
        "ms_per_scene": round(1000 * seconds / max(1, len(results)), 1),
    }
    return results, metrics


class _OneScale(TunedDetector, Protocol):
    """A detector that looks at one enlargement of the picture (not a fused one)."""

    upscale: float


def chain_detector(
    sp: ScenesParams, rescorer, noface: Path | None, name: str | None, finder: Path | None
) -> tuple[FaceDetector, dict]:
    """The detector of the chain and its settings as metrics JSON reports them: the scenes
    params' one; the re-scorer's (at the settings it was trained with); the finder file's
    (or `name` at its settings); or `name` at its own defaults."""
    if rescorer is not None:
        settings = {
            **rescorer.detector,
            "noface": str(noface),
            "face_threshold": rescorer.threshold,
        }
    else:
        settings = sp.model_dump(include={"detector", "threshold", "upscale"})
    if finder is None and name is None:
        detector = create_detector(
            settings["detector"], threshold=settings["threshold"],
            upscale=settings["upscale"], threads=1,
        )  # fmt: skip
        return detector, settings
    if finder is not None:
        name = name or finder_name(read_finder(finder), finder.parent)
        detector = create_finder(finder, name, threads=1)
    else:
        assert name is not None  # finder and name both None returned above
        detector = create_detector(name, threads=1)
    settings = {"detector": name, "threshold": cast(TunedDetector, detector).threshold}
    inner = detector.base if isinstance(detector, TiledDetector) else detector
    if isinstance(inner, FusedDetector):
        settings["iou"] = inner.iou
    elif isinstance(inner, MultiScaleDetector):  # a pyramid: each member one scale
        settings["scales"] = [cast(_OneScale, m).upscale for m in inner.members]
    else:
        settings["upscale"] = cast(_OneScale, inner).upscale
    if isinstance(detector, TiledDetector):  # large photos also in tiles of this many px
        settings["tile"] = detector.tile
    return detector, settings


# --------------------------------------------------------------------------- gallery
def draw_scene(
    image: Image.Image | np.ndarray, result: SceneResult, classes: Sequence[str]
) -> Image.Image:
    """The chain's answers on a scene, labelled faces outlined thinly in white beneath."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    img = img.convert("RGB")
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1 in result.truth:
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=(255, 255, 255), width=1)
    conf = [float(p.max()) for p in result.probs]
    return draw_faces(img, result.boxes.tolist(), result.labels, conf, classes)


def scene_gallery(
    results: Sequence[SceneResult],
    scenes: Sequence[Scene],
    classes: Sequence[str],
    count: int,
    columns: int = 3,
) -> Image.Image:
    """`count` scenes spread evenly over the list (labelled faces in each), drawn and tiled."""
    images = {s.image.stem: s.image for s in scenes}
    with_faces = [r for r in results if len(r.truth)]
    picks = (
        [with_faces[int(i)] for i in np.linspace(0, len(with_faces) - 1, count)]
        if (with_faces and count)
        else []
    )
    tiles = [draw_scene(open_image(images[r.scene])[0], r, classes) for r in picks]
    return tile_images(tiles, columns)
