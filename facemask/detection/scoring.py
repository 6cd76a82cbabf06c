"""Scene scoring: does a face finder (alone, or with the classifier behind it) find the
labelled faces of annotated scenes and name their masks right?

Detections are matched one-to-one to labelled faces at IoU >= 0.5 (greedy, best score
first). Detection recall is per VOC class name and face size (longer box side); mask
accuracy is on the matched faces whose VOC class maps to a model class; mAP@0.5 per class
comes from pycocotools, each face giving one detection per class scored detector score x
class probability (as two-stage detectors score theirs). Running the chain on the scenes is
facemask.serving.scenes's job; this module only reads pictures and scores answers.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from facemask.data.images import ImageError, open_image
from facemask.data.voc import Scene
from facemask.evaluation.slices import BRIGHT, DARK, LIGHT, LUMA


@dataclass
class SceneResult:
    """One scene: its labelled faces and what the chain answered."""

    scene: str
    truth: np.ndarray  # (G, 4) xyxy
    names: list[str]  # VOC class name per labelled face
    boxes: np.ndarray  # (D, 4) xyxy detections
    scores: np.ndarray  # (D,) detector scores 0-1
    probs: np.ndarray  # (D, classes)
    labels: list[str]  # answer per detection (a class or `uncertain`)
    brightness: np.ndarray | None = None  # (G,) mean luma 0-255 of each labelled face's box
    features: np.ndarray | None = None  # (D, features) the classifier's pooled features


def box_brightness(rgb: np.ndarray, boxes: Iterable) -> np.ndarray:
    """Mean luma (ITU-R 601, 0-255) inside each xyxy box of an RGB picture."""
    out = []
    h, w = rgb.shape[:2]
    for b in boxes:
        x0, y0 = max(0, int(b.xmin)), max(0, int(b.ymin))
        x1, y1 = (
            min(w, max(x0 + 1, int(np.ceil(b.xmax)))),
            min(h, max(y0 + 1, int(np.ceil(b.ymax)))),
        )
        patch = rgb[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
        out.append(float((patch @ LUMA).mean()) if len(patch) else np.nan)
    return np.array(out, dtype=np.float64)


def scene_pictures(
    scenes: Iterable[Scene], bad: list[str], light: dict[str, np.ndarray] | None = None
) -> Iterator[tuple[Scene, np.ndarray]]:
    """Each scene with its RGB picture (unreadable ones appended to `bad`); `light`, when
    given, gets each scene's labelled-face brightness."""
    for s in scenes:
        try:
            img, _ = open_image(s.image)
        except ImageError as err:
            bad.append(f"{s.image}: {err}")
            continue
        rgb = np.asarray(img)
        if light is not None:
            light[s.image.stem] = box_brightness(rgb, s.boxes)
        yield s, rgb


def summary_line(metrics: dict) -> str:
    """One line of the headline figures, for the stage's and the command's log."""
    det, cls = metrics["detection"], metrics["classification"]
    far = metrics["found_and_right"]["iou_0.3"]["found_and_right"]
    return (
        f"{metrics['scenes']} scenes, {det['faces']} faces: recall {det['recall']}, "
        f"accuracy on matched {cls['accuracy']} ({cls['faces']} faces), "
        f"found and right (IoU 0.3) {far}, mAP@0.5 {metrics['map50']['mean']}"
    )


# --------------------------------------------------------------------------- matching
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(
    truth: np.ndarray, boxes: np.ndarray, scores: np.ndarray, iou_min: float = 0.5
) -> list[tuple[int, int]]:
    """(truth index, detection index) pairs: detections by falling score each take the free
    labelled face they overlap most, if at IoU >= iou_min."""
    iou = box_iou(truth, boxes)
    free = np.ones(len(truth), bool)
    pairs = []
    for d in np.argsort(-np.asarray(scores), kind="stable"):
        if not free.any():
            break
        cand = np.where(free, iou[:, d], -1.0)
        g = int(cand.argmax())
        if cand[g] >= iou_min:
            pairs.append((g, int(d)))
            free[g] = False
    return pairs


def size_bin(side: float, edges: Sequence[float]) -> str:
    """`<16`, `16-32`, ..., `>=64` for edges [16, 32, 64]."""
    edges = list(edges)
    if side < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in itertools.pairwise(edges):
        if side < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def light_band(luma: float) -> str | None:
    """The brightness band of the evaluation slices: dark (<70), normal, bright (>185)."""
    if np.isnan(luma):
        return None
    return LIGHT[0] if luma < DARK else LIGHT[2] if luma > BRIGHT else LIGHT[1]


def _by_light(faces: pd.DataFrame, hits: pd.Series) -> dict:
    """{band: {faces, rate}} over the bands that occur (none without brightness)."""
    return {
        band: {
            "faces": int((faces["light"] == band).sum()),
            "rate": _rate(hits[faces["light"] == band]),
        }
        for band in LIGHT
        if (faces["light"] == band).any()
    }


def face_table(results: Sequence[SceneResult], iou_min: float) -> pd.DataFrame:
    """One row per labelled face: scene, name, size, detected, predicted (if detected)."""
    rows = []
    for r in results:
        matched = dict(match_boxes(r.truth, r.boxes, r.scores, iou_min))
        for g, name in enumerate(r.names):
            x0, y0, x1, y1 = r.truth[g]
            d = matched.get(g)
            rows.append(
                {
                    "scene": r.scene,
                    "name": name,
                    "side": max(x1 - x0, y1 - y0),
                    "detected": d is not None,
                    "top": None if d is None else int(r.probs[d].argmax()),
                    "answer": None if d is None else r.labels[d],
                    "light": None if r.brightness is None else light_band(r.brightness[g]),
                }
            )
    cols = ["scene", "name", "side", "detected", "top", "answer", "light"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- metrics
def _rate(hits: pd.Series) -> float | None:
    return round(float(hits.mean()), 4) if len(hits) else None


def detection_metrics(
    results: Sequence[SceneResult],
    faces: pd.DataFrame,
    min_face: float,
    size_edges: Sequence[float],
) -> dict:
    """Recall per VOC class and face size, and the share of detections that are labelled
    faces (a lower bound of precision: some real faces in the photos carry no label)."""
    big = faces[faces["side"] >= min_face]
    per_class = {
        name: {
            "faces": len(g),
            "recall": _rate(g["detected"]),
            f"recall_{min_face:g}px_up": _rate(g.loc[g["side"] >= min_face, "detected"]),
        }
        for name, g in faces.groupby("name", sort=True)
    }
    bins = faces["side"].map(lambda s: size_bin(s, size_edges))
    order = [size_bin(e - 1e-9, size_edges) for e in size_edges] + [f">={size_edges[-1]:g}"]
    by_size = {
        b: {"faces": int((bins == b).sum()), "recall": _rate(faces.loc[bins == b, "detected"])}
        for b in order
    }
    detections = sum(len(r.scores) for r in results)
    return {
        "faces": len(faces),
        "recall": _rate(faces["detected"]),
        f"recall_{min_face:g}px_up": _rate(big["detected"]),
        "per_class": per_class,
        "by_size": by_size,
        "by_brightness": _by_light(faces, faces["detected"]),
        "detections": int(detections),
        "labelled_share_of_detections": round(float(faces["detected"].sum()) / detections, 4)
        if detections
        else None,
    }


def classification_on_matched(
    faces: pd.DataFrame, class_map: Mapping[str, str], classes: Sequence[str]
) -> dict:
    """Mask accuracy on detected faces whose VOC class maps to a model class, overall and
    per class (recall: `accuracy`; precision: of the faces called that class, the share that
    are), and the answered part (not `uncertain`) with its accuracy."""
    m = faces[faces["detected"] & faces["name"].isin(list(class_map))].copy()
    truth = m["name"].map(class_map).to_numpy()
    pred = m["top"].map(lambda k: classes[int(k)])
    right = truth == pred.to_numpy()
    answered = (m["answer"] != "uncertain").to_numpy()
    return {
        "faces": len(m),
        "accuracy": _rate(pd.Series(right)),
        "per_class": {
            c: {
                "faces": int((truth == c).sum()),
                "accuracy": _rate(pd.Series(right[truth == c])),
                "precision": _rate(pd.Series(right[pred.to_numpy() == c])),
            }
            for c in classes
            if c in set(class_map.values())
        },
        "answered": _rate(pd.Series(answered)),
        "answered_accuracy": _rate(pd.Series(right[answered])),
    }


def map50(
    results: Sequence[SceneResult],
    class_map: Mapping[str, str],
    classes: Sequence[str],
    curves: dict[str, pd.DataFrame] | None = None,
) -> dict:
    """COCO AP at IoU 0.5 per model class (pycocotools), and their mean; `curves`, when
    given, gets each class's precision-recall curve (a DVC plot of the scenes stages).

    Labelled faces whose VOC class maps to no model class are COCO `iscrowd` regions:
    a detection on one is neither right nor wrong. A class with no labelled face has no AP.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat = {c: i + 1 for i, c in enumerate(classes)}
    images: list[dict] = []
    anns: list[dict] = []
    dets: list[dict] = []
    for i, r in enumerate(results, start=1):
        images.append({"id": i})
        for (x0, y0, x1, y1), name in zip(r.truth, r.names, strict=True):
            mapped = class_map.get(name)
            for c in [mapped] if mapped in cat else classes:  # a crowd region in every class
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": cat[c],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": int(mapped not in cat),
                    }
                )
        for (x0, y0, x1, y1), s, p in zip(r.boxes, r.scores, r.probs, strict=True):
            for c, pc in zip(classes, p, strict=True):
                if s * pc > 0:
                    dets.append(
                        {
                            "image_id": i,
                            "category_id": cat[c],
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(s * pc),
                        }
                    )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": v, "name": k} for k, v in cat.items()],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        per_class: dict[str, float | None] = dict.fromkeys(classes)
        if dets:
            ev = COCOeval(gt, gt.loadRes(dets), "bbox")
            ev.params.iouThrs = np.array([0.5])
            ev.params.maxDets = [1, 10, 10_000]  # crowd photos hold more than 100 faces
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"][0, :, :, 0, -1]  # recall points x classes
            for c, k in cat.items():
                col = precision[:, k - 1]
                per_class[c] = round(float(col[col > -1].mean()), 4) if (col > -1).any() else None
                if curves is not None and (col > -1).any():
                    # COCO's interpolated precision at its 101 recall points (what AP averages)
                    keep = col > -1
                    curves[c] = pd.DataFrame(
                        {
                            "recall": ev.params.recThrs[keep].round(2),
                            "precision": col[keep].round(4),
                        }
                    )
        for c in classes:  # no detection at all: AP 0 where there were faces to find
            if per_class[c] is None and any(
                a["category_id"] == cat[c] and not a["iscrowd"] for a in anns
            ):
                per_class[c] = 0.0
    known = [v for v in per_class.values() if v is not None]
    return {"per_class": per_class, "mean": round(float(np.mean(known)), 4) if known else None}


def found_and_right(
    results: Sequence[SceneResult],
    class_map: Mapping[str, str],
    classes: Sequence[str],
    ious: Sequence[float] = (0.3, 0.5),
    size_edges: Sequence[float] = (16, 32, 64),
) -> dict:
    """The product's figure: the share of labelled faces (of classes the model has) that the
    chain found at IoU >= each of `ious` *and* named right, overall, for faces of the first
    size edge and up, per class and per face size; and false boxes per scene (detections
    matching no labelled face at that IoU)."""
    out = {}
    for iou in ious:
        faces = face_table(results, iou)
        matched = int(faces["detected"].sum())  # one-to-one: a found face is a matched box
        faces = faces[faces["name"].isin(list(class_map))]
        truth = faces["name"].map(class_map)
        top = faces["top"].map(lambda k: None if pd.isna(k) else classes[int(k)])
        hit = faces["detected"] & (top == truth)
        bins = faces["side"].map(lambda v: size_bin(v, size_edges))
        false = sum(len(r.scores) for r in results) - matched
        out[f"iou_{iou:g}"] = {
            "faces": len(faces),
            "found_and_right": _rate(hit),
            f"{size_edges[0]:g}px_up": _rate(hit[faces["side"] >= size_edges[0]]),
            "per_class": {c: _rate(hit[truth == c]) for c in sorted(set(truth))},
            "by_size": {b: _rate(hit[bins == b]) for b in sorted(set(bins), key=_bin_key)},
            "by_brightness": _by_light(faces, hit),
            "false_boxes_per_scene": round(false / len(results), 3) if results else None,
        }
    return out


def _bin_key(name: str) -> float:
    """Sort `<16`, `16-32`, ..., `>=64` by their lower edge."""
    return -1.0 if name.startswith("<") else float(name.lstrip(">=").split("-")[0])


def scene_metrics(
    results: Sequence[SceneResult],
    class_map: Mapping[str, str],
    classes: Sequence[str],
    iou_min: float = 0.5,
    min_face: float = 32,
    size_edges: Sequence[float] = (16, 32, 64),
    curves: dict[str, pd.DataFrame] | None = None,
) -> dict:
    """Everything metrics/scenes.json reports, from the chain's answers on the scenes
    (and the precision-recall curves into `curves`, when given)."""
    faces = face_table(results, iou_min)
    return {
        "scenes": len(results),
        "detection": detection_metrics(results, faces, min_face, size_edges),
        "classification": classification_on_matched(faces, class_map, classes),
        "map50": map50(results, class_map, classes, curves),
        "found_and_right": found_and_right(results, class_map, classes, (0.3, 0.5), size_edges),
    }
