"""Video: a tiny clip written in tmp_path and read back frame by frame, sampled at a rate."""

from __future__ import annotations

import numpy as np
import pytest

from facemask.serving.video import VideoError, VideoWriter, next_sample, read_video

GREYS = [20, 60, 100, 140, 180, 220]


def write_clip(path, frames: int = 12, rate: float = 4.0, size=(47, 33)) -> None:
    """A clip whose frame k is flat grey level GREYS[k % 6] (odd sides: padded on write)."""
    w, h = size
    writer = VideoWriter(path, rate)
    for k in range(frames):
        writer.write(np.full((h, w, 3), GREYS[k % len(GREYS)], np.uint8))
    writer.close()


def test_clip_round_trip_frame_by_frame(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path)
    frames = list(read_video(path))
    assert [f[0] for f in frames] == list(range(12))
    assert [f[1] for f in frames] == pytest.approx([k / 4 for k in range(12)], abs=1e-3)
    for k, (_, _, rgb, rate) in enumerate(frames):
        assert rgb.shape == (34, 48, 3) and rgb.dtype == np.uint8  # 47 x 33 padded to even
        assert rate == pytest.approx(4.0)
        # Lossy H.264 on flat frames: within a few levels of what was written.
        assert abs(float(rgb.mean()) - GREYS[k % 6]) < 4


def test_sampling_rate_keeps_the_first_frame_of_each_slot(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(path, frames=12, rate=4.0)
    kept = list(read_video(path, fps=1.0))  # one frame per second of a 4 fps, 3 s clip
    assert [f[0] for f in kept] == [0, 4, 8]
    assert kept[0][3] == pytest.approx(1.0)  # the annotated video's rate is the sampling rate
    assert [f[0] for f in read_video(path, fps=2.0)] == [0, 2, 4, 6, 8, 10]
    assert len(list(read_video(path, fps=100))) == 12  # above the source's rate: every frame


def test_next_sample_skips_slots_over_gaps():
    assert next_sample(0.0, 2.0) == 0.5
    assert next_sample(0.74, 2.0) == 1.0
    assert next_sample(3.2, 1.0) == 4.0  # after a gap, the next whole second, not 1.0 again


def test_unreadable_videos_raise_video_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(VideoError):
        list(read_video(junk))
    with pytest.raises(VideoError):
        list(read_video(tmp_path / "missing.mp4"))
