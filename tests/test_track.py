"""People in video: the IoU tracker on hand-made box sequences, the vote, and predict --tracks."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from facemask.serving.inputs import Frame
from facemask.serving.stream import Answer, Face
from facemask.serving.track import IouTracker, TrackWriter, track_answers
from facemask.serving.video import VideoWriter
from tests.conftest import CLASSES, scene
from tests.test_cli import run


def face(x: float, p_mask: float = 0.9, y: float = 10.0, side: float = 40.0) -> Face:
    probs = np.array([p_mask, 1 - p_mask])
    return Face((x, y, x + side, y + side), 0.8, probs, CLASSES[int(p_mask < 0.5)])


def test_faces_that_move_a_little_keep_their_track_and_a_newcomer_gets_one():
    t = IouTracker("v.mp4")
    assert t.update(0.0, [face(0), face(100)]) == [1, 2]
    assert t.update(0.5, [face(105), face(8)]) == [2, 1]  # order in the frame does not matter
    assert t.update(1.0, [face(16), face(110), face(200)]) == [1, 2, 3]
    tracks = t.finish()
    assert [(k.track, k.frames, k.first_time, k.last_time) for k in tracks] == [
        (1, 3, 0.0, 1.0), (2, 3, 0.0, 1.0), (3, 1, 1.0, 1.0)
    ]  # fmt: skip


def test_a_short_gap_is_bridged_a_long_one_is_a_new_track():
    t = IouTracker("v.mp4", max_gap=2)
    t.update(0.0, [face(0)])
    t.update(0.5, [])  # a missed detection
    t.update(1.0, [])
    assert t.update(1.5, [face(4)]) == [1]  # two frames missed: still the same person
    for k in range(3):
        t.update(2.0 + k / 2, [])
    assert t.update(3.5, [face(4)]) == [2]  # three missed: gone, this is someone new
    assert [k.frames for k in t.finish()] == [2, 1]


def test_a_jump_beyond_the_overlap_is_another_person():
    t = IouTracker("v.mp4", min_iou=0.3)
    t.update(0.0, [face(0)])
    assert t.update(0.5, [face(30)]) == [2]  # IoU 10/70 = 0.14 < 0.3
    assert t.update(1.0, [face(34)]) == [2]  # IoU 36/44 = 0.82


def test_the_vote_is_the_mean_probability_and_abstains_like_a_face():
    out = io.StringIO()
    frames = [Frame("v.mp4", None, None, index=k, time=k / 2) for k in range(3)]
    answers = [Answer(f, [face(0, p)]) for f, p in zip(frames, (0.9, 0.4, 0.8), strict=True)]
    answers.append(Answer(Frame("still.jpg", None, None), [face(0, 0.1)]))  # no time: no track
    writer = TrackWriter(out, CLASSES, abstain=0.0)
    passed = list(track_answers(answers, writer.write))
    assert passed == answers  # unchanged, in order
    table = pd.read_csv(io.StringIO(out.getvalue()))
    assert table[["path", "track", "frames", "predicted"]].values.tolist() == [
        ["v.mp4", 1, 3, "with_mask"]
    ]
    assert table["p_with_mask"].iloc[0] == pytest.approx(0.7)
    unsure = io.StringIO()
    list(track_answers(answers[:3], TrackWriter(unsure, CLASSES, abstain=0.75).write))
    assert pd.read_csv(io.StringIO(unsure.getvalue()))["predicted"].tolist() == ["uncertain"]


def test_predict_writes_one_row_per_person_beside_the_frame_rows(tmp_path, model_file, capsys):
    rng = np.random.default_rng(4)
    for name in ("a.mp4", "b.mp4"):
        writer = VideoWriter(tmp_path / name, 10.0)
        for _ in range(20):  # 2 s at 10 fps: 4 sampled frames at --fps 2
            writer.write(np.asarray(scene(rng)))
        writer.close()
    people_csv = tmp_path / "t" / "people.csv"
    code, out, err = run(capsys, tmp_path / "a.mp4", tmp_path / "b.mp4", "--model", model_file,
                         "--detector", "two", "--tracks", people_csv)  # fmt: skip
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(out))) == 16  # the frame rows as before: 2 x 4 x 2
    people = pd.read_csv(people_csv)
    assert people["path"].tolist() == [
        str(tmp_path / n) for n in ("a.mp4", "a.mp4", "b.mp4", "b.mp4")
    ]
    assert people["track"].tolist() == [1, 2, 1, 2]  # the stub's two faces, in each video
    assert (people["frames"] == 4).all() and np.allclose(people["last_time"], 1.5, atol=1e-3)
    assert set(people["predicted"]) <= {*CLASSES, "uncertain"}
