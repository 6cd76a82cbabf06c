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


def _send_udp(url: str, frames: int, rate: float, started) -> None:
    """An MPEG-TS stream of bright-bar frames sent to `url` in real time (a live source)."""
    import time

    import av

    started.wait()
    with av.open(url, mode="w", format="mpegts") as out:
        stream = out.add_stream("mpeg2video", rate=int(rate))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            rgb = np.zeros((48, 64, 3), np.uint8)
            rgb[:, (i * 4) % 64 : (i * 4) % 64 + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            time.sleep(1 / rate)
        for packet in stream.encode():
            out.mux(packet)


def test_a_live_udp_stream_is_read_as_a_video_that_ends_when_it_stops(tmp_path, monkeypatch):
    """A real network stream through FFmpeg (UDP on loopback): frames arrive, times count
    from the first frame, and when the sender stops the stream ends without an error (after
    the live timeout, shortened here)."""
    import socket
    import threading

    from facemask.serving import video
    from facemask.serving.inputs import expand_inputs, read_frames

    monkeypatch.setattr(video, "LIVE_TIMEOUT_S", 1.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"udp://127.0.0.1:{port}"
    errors = []
    inputs = expand_inputs([url], lambda src, why: errors.append(why))
    assert [i.live for i in inputs] == [url] and str(inputs[0].name).endswith(".mp4")
    started = threading.Event()
    sender = threading.Thread(target=_send_udp, args=(url, 40, 20.0, started))
    sender.start()
    frames = read_frames(inputs, fps=5.0, on_error=lambda src, why: errors.append(why))
    started.set()  # the reader binds the port as it opens it, below
    got = list(frames)
    sender.join()
    assert not errors
    assert len(got) >= 4 and got[0].source == url and got[0].rate == 5.0
    assert got[0].time == pytest.approx(0.0) and got[-1].time > 0.5
    assert all(f.image.shape == (48, 64, 3) for f in got)
