"""People in a video: faces linked across sampled frames by box overlap (an IoU tracker),
one answer per track from the vote of its frames.

Each sampled frame's faces are matched to the tracks seen in the last `max_gap` sampled
frames by the assignment that maximises total IoU (scipy's linear_sum_assignment), pairs
below `min_iou` left apart; an unmatched face starts a track. Sampled frames are far apart
(2 a second by default), so a face moves little in pixels only when it is large or slow:
a person who walks fast across the frame may split into two tracks.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TypedDict, Unpack

import numpy as np
from scipy.optimize import linear_sum_assignment

from facemask.detection.scoring import box_iou
from facemask.serving.stream import Answer, Face, label_faces

MIN_IOU = 0.3  # a face this far onto a track's last box continues it
MAX_GAP = 2  # sampled frames a track may miss (a turned head, a missed detection)


@dataclass
class Track:
    """One person's face over consecutive sampled frames of one video."""

    source: str
    track: int  # 1, 2, ... in order of first appearance within the video
    first_time: float
    last_time: float
    box: tuple[float, float, float, float]  # the last one seen
    probs_sum: np.ndarray
    frames: int = 1
    last_step: int = 0  # the sampled frame it was last seen in
    scores: list[float] = field(default_factory=list)

    @property
    def probs(self) -> np.ndarray:
        """The vote: mean class probabilities over the track's frames."""
        return self.probs_sum / self.frames


class IouTracker:
    """Tracks of one video, fed one sampled frame at a time."""

    def __init__(self, source: str, min_iou: float = MIN_IOU, max_gap: int = MAX_GAP) -> None:
        self.source, self.min_iou, self.max_gap = source, min_iou, max_gap
        self.live: list[Track] = []
        self.done: list[Track] = []
        self.step = -1

    def update(self, time: float, faces: Sequence[Face]) -> list[int]:
        """Add one sampled frame; returns each face's track number."""
        self.step += 1
        ended = [t for t in self.live if self.step - t.last_step - 1 > self.max_gap]
        self.done += ended
        self.live = [t for t in self.live if t not in ended]
        ids = [0] * len(faces)
        matched: set[int] = set()
        if self.live and faces:
            iou = box_iou(np.array([t.box for t in self.live]), np.array([f.box for f in faces]))
            for r, c in zip(*linear_sum_assignment(-iou), strict=True):
                if iou[r, c] >= self.min_iou:
                    self._extend(self.live[r], time, faces[c])
                    ids[c] = self.live[r].track
                    matched.add(c)
        for c, face in enumerate(faces):
            if c not in matched:
                n = len(self.live) + len(self.done) + 1
                self.live.append(Track(self.source, n, time, time, face.box,
                                       face.probs.astype(np.float64), 1, self.step,
                                       [face.score]))  # fmt: skip
                ids[c] = n
        return ids

    def _extend(self, track: Track, time: float, face: Face) -> None:
        track.last_time, track.box, track.last_step = time, face.box, self.step
        track.probs_sum = track.probs_sum + face.probs
        track.frames += 1
        track.scores.append(face.score)

    def finish(self) -> list[Track]:
        """Every track of the video, in order of first appearance."""
        tracks, self.live, self.done = sorted(self.live + self.done, key=lambda t: t.track), [], []
        return tracks


class TrackerSettings(TypedDict, total=False):
    """IouTracker's keyword arguments."""

    min_iou: float
    max_gap: int


def track_answers(
    answers: Iterable[Answer],
    on_tracks: Callable[[list[Track]], None],
    **tracker: Unpack[TrackerSettings],
) -> Iterator[Answer]:
    """Pass the answers through unchanged, tracking the faces of each video (frames with a
    time); `on_tracks` gets a video's tracks when its last frame has gone by."""
    current: IouTracker | None = None
    for answer in answers:
        frame = answer.frame
        if current is not None and frame.source != current.source:
            on_tracks(current.finish())
            current = None
        if frame.time is not None:
            current = current or IouTracker(frame.source, **tracker)
            current.update(frame.time, answer.faces)
        yield answer
    if current is not None:
        on_tracks(current.finish())


class TrackWriter:
    """One CSV row per track: where and when it was seen, and the vote of its frames."""

    def __init__(self, handle: IO[str], classes: Sequence[str], abstain: float) -> None:
        self.classes, self.abstain = list(classes), abstain
        self.out = csv.writer(handle, lineterminator="\n")
        self.out.writerow(["path", "track", "first_time", "last_time", "frames", "predicted",
                           *(f"p_{c}" for c in self.classes), "mean_score"])  # fmt: skip
        self.count = 0

    def write(self, tracks: list[Track]) -> None:
        if not tracks:
            return
        probs = np.stack([t.probs for t in tracks])
        for t, label, p in zip(tracks, label_faces(probs, self.classes, self.abstain), probs,
                               strict=True):  # fmt: skip
            self.out.writerow([t.source, t.track, round(t.first_time, 3), round(t.last_time, 3),
                               t.frames, label, *(round(float(x), 4) for x in p),
                               round(float(np.mean(t.scores)), 4)])  # fmt: skip
        self.count += len(tracks)
