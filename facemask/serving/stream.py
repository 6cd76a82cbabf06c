"""The serving chain as a stream: frames -> faces (detector) -> training-style crops ->
classifier in batches -> one answer per frame, then rows and annotated pictures or video.

Memory is bounded by the batch: at most `batch_size` frames and their crops wait for the
classifier, however many inputs there are.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np
from PIL import Image

from facemask.data.images import resize_square
from facemask.detection.crop_check import CropCheck
from facemask.detection.finders import Detection, FaceDetector, as_box
from facemask.serving.annotate import UNCERTAIN, draw_faces
from facemask.serving.crops import face_crops
from facemask.serving.engines import Engine
from facemask.serving.inputs import Frame, output_name
from facemask.serving.video import VideoWriter, is_video

NO_FACE = "no_face"  # predict --crops: the crop check found no face in the picture


class Rescorer(Protocol):
    """A second look at detector boxes (facemask.detection.noface.NoFaceScorer): P(face)
    per box from its detector score, box, class probabilities and (if it needs them) the
    classifier's pooled features; boxes below `threshold` are dropped as no face."""

    threshold: float

    @property
    def needs_features(self) -> bool: ...

    def face_probs(
        self,
        scores: np.ndarray,
        boxes: np.ndarray,
        probs: np.ndarray,
        features: np.ndarray | None = None,
    ) -> np.ndarray: ...


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 px in the frame
    score: float  # detector score 0-1 (1 for a pre-cropped face)
    probs: np.ndarray  # one per class, the card's order
    label: str  # the top class, or `uncertain` below the abstain threshold
    face_score: float | None = None  # the no-face re-scorer's P(face), when one ran
    features: np.ndarray | None = None  # the classifier's pooled features of the crop

    @property
    def rank_score(self) -> float:
        """How sure the chain is that this is a face: the re-scorer's, else the detector's."""
        return self.score if self.face_score is None else self.face_score


@dataclass
class Answer:
    frame: Frame
    faces: list[Face]
    no_face: int = 0  # detector boxes the re-scorer dropped as not a face


def label_faces(probs: np.ndarray, classes: Sequence[str], abstain: float) -> list[str]:
    """Top class per row; `uncertain` where the top probability is below `abstain`."""
    top = probs.argmax(1)
    return [classes[k] if probs[i, k] >= abstain else UNCERTAIN for i, k in enumerate(top)]


def answer_frames(
    frames: Iterable[Frame],
    engine: Engine,
    detector: FaceDetector | None,
    margin: float,
    batch_size: int = 64,
    abstain: float = 0.0,
    keep_images: bool = True,
    rescorer: Rescorer | None = None,
    keep_features: bool = False,
    crop_check: CropCheck | None = None,
) -> Iterator[Answer]:
    """Detect, crop and classify every frame, in input order.

    `crop_check` (no detector only): a frame in which it finds no face is answered `no_face`
    (box the whole frame, score 0, probabilities 0) instead of being classified.

    Without a detector each frame is one pre-cropped face, squashed whole as training
    pictures were. Crops of several frames share a classifier batch; `keep_images=False`
    drops each frame's pixels once its crops are cut (nothing to annotate). A `rescorer`
    takes a second look at every detector box from the
    classifier's features of its crop and drops those it calls no face; `keep_features`
    keeps those features on each face (mining the re-scorer's training rows).
    """
    size = engine.card.image_size
    pending: list[tuple[Frame, list[Detection], np.ndarray]] = []
    waiting = 0
    for frame in frames:
        image = frame.image
        if image is None:
            raise ValueError(f"{frame.source}: frame pixels were dropped, nothing to answer")
        h, w = image.shape[:2]
        if detector is None and crop_check is not None and not crop_check.holds_face(image):
            yield from _classify(pending, engine, abstain, rescorer, keep_features)
            pending, waiting = [], 0
            zeros = np.zeros(len(engine.card.classes), np.float32)
            yield Answer(frame, [Face((0.0, 0.0, float(w), float(h)), 0.0, zeros, NO_FACE)], 0)
            continue
        if detector is None:
            found = [((0.0, 0.0, float(w), float(h)), 1.0)]
            crops = resize_square(Image.fromarray(image), size)[None]
        else:
            found = detector.detect(image)
            crops = face_crops(image, [box for box, _ in found], margin, size)
        if not keep_images:
            frame.image = None
        pending.append((frame, found, crops))
        waiting += len(found)
        if waiting >= batch_size or len(pending) >= batch_size:
            yield from _classify(pending, engine, abstain, rescorer, keep_features)
            pending, waiting = [], 0
    yield from _classify(pending, engine, abstain, rescorer, keep_features)


def _classify(
    pending: list[tuple[Frame, list[Detection], np.ndarray]],
    engine: Engine,
    abstain: float,
    rescorer: Rescorer | None = None,
    keep_features: bool = False,
) -> Iterator[Answer]:
    if not pending:
        return
    crops = np.concatenate([c for _, _, c in pending])
    classes = engine.card.classes
    feats = face_p = None
    if not len(crops):
        probs = np.zeros((0, len(classes)), np.float32)
    elif keep_features or (rescorer is not None and rescorer.needs_features):
        if not hasattr(engine, "embed"):
            raise ValueError(
                "this no-face re-scorer reads the classifier's features: --engine torch"
            )
        probs, feats = engine.embed(crops)
    else:
        probs = engine(crops)
    if rescorer is not None and len(crops):
        found_all = [d for _, found, _ in pending for d in found]
        boxes = np.array([box for box, _ in found_all], np.float64)
        face_p = rescorer.face_probs(np.array([s for _, s in found_all]), boxes, probs, feats)
    labels = label_faces(probs, classes, abstain)
    k = 0
    for frame, found, _ in pending:
        faces, dropped = [], 0
        for box, score in found:
            # face_p is only set when a rescorer ran
            if face_p is not None and rescorer is not None and face_p[k] < rescorer.threshold:
                dropped += 1
            else:
                faces.append(
                    Face(
                        as_box(box),
                        float(score),
                        probs[k],
                        labels[k],
                        None if face_p is None else float(face_p[k]),
                        feats[k] if keep_features and feats is not None else None,
                    )
                )
            k += 1
        yield Answer(frame, faces, dropped)


# --------------------------------------------------------------------------- rows
def face_rows(answer: Answer, classes: Sequence[str]) -> list[dict]:
    """One flat row per face: source, frame, time, box, detector score, answer, probabilities."""
    f = answer.frame
    rows = []
    for face in answer.faces:
        row = {
            "path": f.source,
            "frame": f.index,
            "time": None if f.time is None else round(f.time, 3),
            **dict(zip(("x0", "y0", "x1", "y1"), (round(v, 1) for v in face.box), strict=True)),
            "detector_score": round(face.score, 4),
            "predicted": face.label,
            "confidence": round(float(face.probs.max()), 6),
        }
        row.update({f"p_{c}": round(float(p), 6) for c, p in zip(classes, face.probs, strict=True)})
        rows.append(row)
    return rows


class RowWriter:
    """Face rows streamed to CSV (a header, then a line per face) or JSON Lines."""

    def __init__(self, handle: IO[str], classes: Sequence[str], fmt: str = "csv") -> None:
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"row format {fmt!r}: csv or jsonl")
        self.handle, self.classes, self.fmt = handle, list(classes), fmt
        columns = ["path", "frame", "time", "x0", "y0", "x1", "y1", "detector_score"]
        columns += ["predicted", "confidence", *[f"p_{c}" for c in self.classes]]
        if fmt == "csv":
            self._csv = csv.DictWriter(handle, columns, lineterminator="\n")
            self._csv.writeheader()

    def write(self, answer: Answer) -> None:
        for row in face_rows(answer, self.classes):
            if self.fmt == "csv":
                self._csv.writerow({k: "" if v is None else v for k, v in row.items()})
            else:
                row["box"] = [row.pop(k) for k in ("x0", "y0", "x1", "y1")]
                row["probs"] = {c: row.pop(f"p_{c}") for c in self.classes}
                self.handle.write(json.dumps(row) + "\n")


# --------------------------------------------------------------------------- annotated outputs
class AnnotationWriter:
    """Annotated copies under `out`: a picture per image, an MP4 per video (its sampled frames,
    at the sampling rate). A video's file is closed when the next source starts."""

    def __init__(self, out: Path, classes: Sequence[str]) -> None:
        self.out, self.classes = out, list(classes)
        self._video: VideoWriter | None = None
        self._video_source: str | None = None
        self.written: list[Path] = []

    def write(self, answer: Answer) -> None:
        f = answer.frame
        if f.image is None:
            raise ValueError("frame pixels were dropped (keep_images=False): nothing to draw")
        confidences = [float(face.probs.max()) for face in answer.faces]
        picture = draw_faces(
            f.image,
            [face.box for face in answer.faces],
            [face.label for face in answer.faces],
            confidences,
            self.classes,
        )
        video = f.rate is not None or is_video(f.source)
        path = self.out / output_name(f.name, video)
        if not video:
            self._close_video()
            path.parent.mkdir(parents=True, exist_ok=True)
            picture.save(path, quality=90)
            self.written.append(path)
            return
        if self._video_source != f.source:
            self._close_video()
            rate = f.rate if f.rate and math.isfinite(f.rate) else 25.0
            self._video, self._video_source = VideoWriter(path, rate), f.source
            self.written.append(path)
        assert self._video is not None  # opened above for this source
        self._video.write(np.asarray(picture))

    def _close_video(self) -> None:
        if self._video is not None:
            self._video.close()
        self._video, self._video_source = None, None

    def close(self) -> None:
        self._close_video()


def write_answers(
    answers: Iterable[Answer],
    rows: RowWriter,
    annotated: AnnotationWriter | None = None,
    on_source: Callable[[], object] | None = None,
) -> tuple[int, dict[str, int]]:
    """Write each answer's rows (and annotated picture); return (frames, faces per answer).
    `on_source` is called as each new source starts (a progress bar's tick)."""
    counts: dict[str, int] = {}
    frames, source = 0, None
    for answer in answers:
        if answer.frame.source != source and on_source is not None:
            on_source()
        source = answer.frame.source
        frames += 1
        for face in answer.faces:
            counts[face.label] = counts.get(face.label, 0) + 1
        if answer.no_face:  # boxes the re-scorer dropped: counted, never written as rows
            counts["no_face"] = counts.get("no_face", 0) + answer.no_face
        rows.write(answer)
        if annotated is not None:
            annotated.write(answer)
    return frames, counts
