"""Video in and out through PyAV, whose wheel brings FFmpeg and its codecs (H.264 included)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from av.video.stream import VideoStream

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"}


class VideoError(ValueError):
    """A video file that cannot be decoded; the message says why."""


# Live sources FFmpeg opens by URL (an IP camera's RTSP, a UDP or HTTP stream) or a camera
# device (Video4Linux): read as a video that does not end.
LIVE_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|rtp|tcp|srt)://", re.I)
CAMERA = re.compile(r"^/dev/video\d+$")
LIVE_TIMEOUT_S = 10.0  # a stream silent this long has ended (or was never there)


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_live(source: str) -> bool:
    """An RTSP/UDP/HTTP/... URL or a camera device (/dev/videoN)."""
    return bool(LIVE_URL.match(source) or CAMERA.match(source))


def _open(source: str | os.PathLike):
    """av.open, with what live sources need: the camera device's demuxer, RTSP over TCP (no
    lost UDP packets behind NAT), and a timeout so a dead stream ends instead of hanging."""
    import av

    src = str(source)
    if not is_live(src):
        return av.open(src)
    options = {"rtsp_transport": "tcp"} if src.lower().startswith("rtsp") else {}
    fmt = "v4l2" if CAMERA.match(src) else None
    return av.open(src, format=fmt, options=options, timeout=LIVE_TIMEOUT_S)


def next_sample(t: float, fps: float) -> float:
    """After keeping a frame at t s, the time from which the next one is kept: the next
    multiple of 1/fps (a gap in the stream skips slots instead of bunching frames)."""
    return (math.floor(t * fps + 1e-6) + 1) / fps


def read_video(
    path: str | os.PathLike, fps: float = 0.0
) -> Iterator[tuple[int, float, np.ndarray, float]]:
    """(frame number, time s, RGB uint8 HWC, output rate) of the frames kept at `fps`.

    Frames are decoded one at a time: memory holds one frame, whatever the video's length.
    The output rate is the rate of the frames kept (the source's rate when fps keeps all).
    A live source (`is_live`) runs until it stops sending; its times count from its first
    frame.
    """
    import av

    try:
        container = _open(path)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"cannot open video: {err}") from err
    with container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding is otherwise one core
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        out_rate = min(fps, rate) if fps > 0 else rate
        step = 1 / rate
        index, next_t, start = 0, 0.0, None
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else index * step
                start = t if start is None else start
                t -= start if is_live(str(path)) else 0.0
                if fps <= 0 or t >= next_t - 1e-6:
                    next_t = next_sample(t, fps) if fps > 0 else 0.0
                    yield index, t, frame.to_ndarray(format="rgb24"), out_rate
                index += 1
        except (av.FFmpegError, OSError, ValueError) as err:
            if index and is_live(str(path)):
                return  # a live stream that stopped sending (timeout) has ended
            raise VideoError(f"corrupt video data at frame {index}: {err}") from err
        if index == 0:
            raise VideoError("no decodable frame")


class VideoWriter:
    """H.264 MP4 written frame by frame (yuv420p, the format every player reads)."""

    def __init__(self, path: str | os.PathLike, rate: float) -> None:
        import av

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w")
        # A rate like 29.97 must stay exact for the time stamps: a fraction, not a float.
        self._rate = Fraction(rate).limit_denominator(1001)
        self._stream: VideoStream | None = None

    def write(self, rgb: np.ndarray) -> None:
        import av

        # yuv420p needs even sides: pad odd ones by one edge pixel.
        h, w = rgb.shape[:2]
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            self._stream.width, self._stream.height = rgb.shape[1], rgb.shape[0]
            self._stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
        self._container.close()
