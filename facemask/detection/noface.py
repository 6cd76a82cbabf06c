"""The no-face re-scorer: is a detector box a face at all?

The face detector (YuNet) was trained on bare faces: at a threshold low enough to find the
masked ones it also answers walls, hands and fabric. Every box it gives is cut and classified
anyway, so the classifier's pooled features of the crop are at hand; a logistic regression on
them (and on the detector's score and the box size) learns what is not a face from *hard
negatives*: boxes the detector finds in the training scenes that match no labelled face.
Boxes whose face probability falls below the re-scorer's threshold are dropped as `no_face`;
the rest are ranked by it (mAP).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facemask.detection.scoring import SceneResult, box_iou, found_and_right

FORMAT = "facemask-noface/1"


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file: ties a re-scorer to the classifier it was trained on."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


INPUTS = ("confidence", "features")


def design(
    inputs: str,
    scores: np.ndarray,
    boxes: np.ndarray,
    probs: np.ndarray,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """The re-scorer's inputs per box: the detector score's logit, log box side, and either
    the classifier's confidence (top probability, entropy) or its pooled features."""
    s = np.clip(np.asarray(scores, np.float64), 1e-4, 1 - 1e-4)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    box = np.stack([np.log(s / (1 - s)), np.log1p(np.maximum(side, 0))], 1)
    if inputs == "features":
        if features is None:
            raise ValueError("this re-scorer reads the classifier's features: --engine torch")
        return np.concatenate([np.asarray(features, np.float64), box], 1)
    if inputs != "confidence":
        raise ValueError(f"re-scorer inputs {inputs!r}: one of {', '.join(INPUTS)}")
    if not len(box):
        return np.zeros((0, 4))
    p = np.asarray(probs, np.float64).reshape(len(box), -1)
    entropy = -(p * np.log(np.clip(p, 1e-9, 1))).sum(1)
    return np.concatenate([box, p.max(1, keepdims=True), entropy[:, None]], 1)


@dataclass
class NoFaceScorer:
    """A fitted re-scorer: standardise [features, box inputs], then a logistic regression."""

    mean: np.ndarray  # (inputs,)
    scale: np.ndarray  # (inputs,)
    coef: np.ndarray  # (inputs,)
    intercept: float
    threshold: float  # face probability a box needs to be kept
    inputs: str = "confidence"  # what it reads besides the box: see `design`
    detector: dict = field(default_factory=dict)  # name, threshold, upscale it was mined at
    model_sha256: str = ""  # the classifier file whose features it reads

    @property
    def needs_features(self) -> bool:
        return self.inputs == "features"

    def face_probs(
        self,
        scores: np.ndarray,
        boxes: np.ndarray,
        probs: np.ndarray,
        features: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(face) per box, from its detector score, size and what the classifier said."""
        x = design(self.inputs, scores, boxes, probs, features)
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        meta = {k: v for k, v in asdict(self).items() if k not in ("mean", "scale", "coef")}
        tensors = {
            k: np.ascontiguousarray(getattr(self, k), np.float64) for k in ("mean", "scale", "coef")
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(
            tensors,
            str(path),
            metadata={"facemask_noface": json.dumps({"format": FORMAT, **meta}, sort_keys=True)},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> NoFaceScorer:
        """Read a saved re-scorer; a missing or foreign file is a ValueError naming it."""
        from safetensors import safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such re-scorer file")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads((f.metadata() or {})["facemask_noface"])
                tensors = {k: f.get_tensor(k) for k in ("mean", "scale", "coef")}
        except Exception as err:  # safetensors has its own error types for a corrupt file
            raise ValueError(
                f"{path}: not a no-face re-scorer ({type(err).__name__}: {err})"
            ) from err
        if meta.pop("format", None) != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        return cls(**tensors, **meta)

    @classmethod
    def for_model(cls, path: str | os.PathLike, model_path: str | os.PathLike) -> NoFaceScorer:
        """`load`, refusing a re-scorer fitted on another classifier than `model_path`'s."""
        scorer = cls.load(path)
        scorer.check_model(model_path, str(path))
        return scorer

    def check_model(self, model_path: str | os.PathLike, source: str = "re-scorer") -> None:
        """Refuse a classifier other than the one whose features the re-scorer learned."""
        if self.model_sha256 and file_sha256(model_path) != self.model_sha256:
            raise ValueError(
                f"{source}: trained on the features of another classifier than {model_path}"
                " (retrain it: dvc repro detect/dvc.yaml)"
            )


# --------------------------------------------------------------------------- mining
def candidates(results: Sequence[SceneResult], face_iou: float) -> dict[str, np.ndarray]:
    """Every detector box of every scene as a training row: features, detector score, box,
    and `face` = it overlaps a labelled face (any class) at IoU >= face_iou. Boxes that match
    no labelled face are the hard negatives."""
    feats, scores, boxes, probs, face, scene = [], [], [], [], [], []
    for i, r in enumerate(results):
        if not len(r.boxes):
            continue
        if r.features is None:
            raise ValueError(f"scene {r.scene}: run the chain with keep_features=True")
        iou = box_iou(r.truth, r.boxes)
        best = iou.max(0) if len(r.truth) else np.zeros(len(r.boxes))
        feats.append(r.features)
        scores.append(r.scores)
        boxes.append(r.boxes)
        probs.append(r.probs)
        face.append(best >= face_iou)
        scene.append(np.full(len(r.boxes), i))
    dim = feats[0].shape[1] if feats else 0
    return {
        "features": np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
        "scores": np.concatenate(scores) if scores else np.zeros(0),
        "boxes": np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4)),
        "probs": np.concatenate(probs) if probs else np.zeros((0, 0)),
        "face": np.concatenate(face) if face else np.zeros(0, bool),
        "scene": np.concatenate(scene) if scene else np.zeros(0, int),
    }


def fit_noface(rows: Mapping[str, np.ndarray], inputs: str, c: float, seed: int) -> NoFaceScorer:
    """Logistic regression (L2, inverse strength `c`) of `face` on the standardised inputs."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(rows["face"], bool)
    if y.all() or not y.any():
        raise ValueError(
            f"re-scorer training rows: {int(y.sum())} faces and {int((~y).sum())} non-faces;"
            " it needs both (a lower detector threshold finds non-faces)"
        )
    x = design(inputs, rows["scores"], rows["boxes"], rows["probs"], rows["features"])
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-8] = 1.0  # a constant input: leave it unscaled, its weight goes to 0
    lr = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    lr.fit((x - mean) / scale, y)
    coef = lr.coef_[0].astype(np.float64)
    return NoFaceScorer(mean, scale, coef, float(lr.intercept_[0]), 0.5, inputs)


# --------------------------------------------------------------------------- operating point
def rescored(
    results: Sequence[SceneResult], probs: Sequence[np.ndarray], threshold: float
) -> list[SceneResult]:
    """The scenes with only the boxes whose face probability >= threshold, each scored by it."""
    out = []
    for r, p in zip(results, probs, strict=True):
        k = p >= threshold
        out.append(
            SceneResult(
                r.scene,
                r.truth,
                r.names,
                r.boxes[k],
                p[k],
                r.probs[k],
                [lab for lab, keep in zip(r.labels, k, strict=True) if keep],
                r.brightness,
                None if r.features is None else r.features[k],
            )
        )
    return out


def sweep(
    results: Sequence[SceneResult],
    probs: Sequence[np.ndarray],
    class_map: Mapping[str, str],
    classes: Sequence[str],
    thresholds: Sequence[float],
    iou: float = 0.3,
) -> list[dict]:
    """Per face-probability threshold: found and right, false boxes per scene, and F1 of
    found-and-right against the share of kept boxes on a labelled face."""
    rows = []
    for t in thresholds:
        kept = rescored(results, probs, float(t))
        m = found_and_right(kept, class_map, classes, (iou,))[f"iou_{iou:g}"]
        boxes = sum(len(r.scores) for r in kept)
        false = (m["false_boxes_per_scene"] or 0.0) * len(kept)
        precision = 1.0 - false / boxes if boxes else 0.0
        recall = m["found_and_right"] or 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "threshold": round(float(t), 3),
                "found_and_right": recall,
                "false_boxes_per_scene": m["false_boxes_per_scene"],
                "box_precision": round(precision, 4),
                "f1": round(f1, 4),
            }
        )
    return rows
