"""The chain's boxes on the training scenes, kept for the re-scorer and the box refiner:
one .npz of every detector box (features, score, class probabilities: features and
probabilities without columns where no classifier ran) and every labelled face, per scene."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facemask.data.voc import Scene
from facemask.detection.finders import FaceDetector
from facemask.detection.operating import as_arrays
from facemask.detection.scoring import SceneResult, scene_pictures


def detector_boxes(
    scenes: Sequence[Scene], detector: FaceDetector, bad: list[str] | None = None
) -> list[SceneResult]:
    """The detector alone on every scene: its boxes and scores beside the labelled faces,
    no classifier (probs and features have no columns; every label is `face`): what the box
    refiner fits on."""
    bad = [] if bad is None else bad
    out = []
    for scene, rgb in scene_pictures(scenes, bad):
        boxes, scores = as_arrays(detector.detect(rgb))
        labelled = scene.boxes
        n = len(boxes)
        out.append(
            SceneResult(
                scene.image.stem,
                np.array([[b.xmin, b.ymin, b.xmax, b.ymax] for b in labelled]).reshape(-1, 4),
                [b.name for b in labelled],
                boxes,
                scores,
                np.zeros((n, 0)),
                ["face"] * n,
                None,
                np.zeros((n, 0), np.float32),
            )
        )
    return out


def save_results(
    path: str | os.PathLike, results: Sequence[SceneResult], splits: Sequence[str]
) -> None:
    """Write the scenes' results (run with keep_features=True) and each scene's split."""
    dims = [r.features.shape[1] for r in results if r.features is not None and len(r.boxes)]
    if not dims:
        raise ValueError("no detector box in any scene: nothing to learn from")
    dim = dims[0]
    box_scene = np.concatenate([np.full(len(r.boxes), i) for i, r in enumerate(results)])
    face_scene = np.concatenate([np.full(len(r.truth), i) for i, r in enumerate(results)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        scene=np.array([r.scene for r in results]),
        split=np.array(list(splits)),
        box_scene=box_scene.astype(np.int64),
        boxes=np.concatenate([r.boxes for r in results]).reshape(-1, 4),
        scores=np.concatenate([r.scores for r in results]),
        probs=np.concatenate([r.probs for r in results]),
        labels=np.array([lab for r in results for lab in r.labels], dtype=str),
        features=np.concatenate(
            [r.features if len(r.boxes) else np.zeros((0, dim)) for r in results]
        ).astype(np.float32),
        face_scene=face_scene.astype(np.int64),
        truth=np.concatenate([r.truth for r in results]).reshape(-1, 4),
        names=np.array([n for r in results for n in r.names], dtype=str),
    )


def load_results(path: str | os.PathLike) -> tuple[list[SceneResult], np.ndarray]:
    """The scenes as saved, and the split of each."""
    try:
        z = np.load(path)
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a candidates file ({err})") from err
    out = []
    for i, scene in enumerate(arrays["scene"]):
        b, g = arrays["box_scene"] == i, arrays["face_scene"] == i
        out.append(
            SceneResult(
                str(scene),
                arrays["truth"][g],
                [str(n) for n in arrays["names"][g]],
                arrays["boxes"][b],
                arrays["scores"][b],
                arrays["probs"][b],
                [str(lab) for lab in arrays["labels"][b]],
                None,
                arrays["features"][b],
            )
        )
    return out, arrays["split"]


def load_train_valid(path: str | os.PathLike) -> tuple[list[SceneResult], list[SceneResult]]:
    """The saved scenes of the training split and of the validation split (both needed:
    what is fitted on the first is chosen on the second)."""
    results, split = load_results(path)
    train = [r for r, s in zip(results, split, strict=True) if s == "train"]
    valid = [r for r, s in zip(results, split, strict=True) if s == "valid"]
    if not train or not valid:
        raise ValueError(f"{path}: needs train and valid scenes")
    return train, valid
