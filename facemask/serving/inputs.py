"""What `facemask predict` reads: files, folders (recursive), globs and videos, as a stream of
frames that holds one decoded picture at a time."""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from facemask.data.images import IMAGE_SUFFIXES, ImageError, open_image
from facemask.serving.video import VideoError, is_live, is_video, read_video


@dataclass(frozen=True)
class Input:
    path: Path
    name: PurePath  # where its outputs go, relative to the output folder
    live: str | None = None  # a stream URL or camera device, read as a video (path unused)


@dataclass
class Frame:
    """One picture to answer: a whole image file, or a frame sampled from a video."""

    source: str  # the file, as named on the command line (or found under a folder)
    name: PurePath  # output name, relative
    image: np.ndarray | None  # RGB uint8 HWC; dropped once no longer needed
    index: int = 0  # frame number in the video (0 for an image)
    time: float | None = None  # seconds into the video (None for an image)
    rate: float | None = None  # frames per second of the sampled video (None for an image)


ErrorHandler = Callable[[str, str], None]  # (source, reason)


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or is_video(path)


def expand_inputs(args: Iterable[str], on_error: ErrorHandler) -> list[Input]:
    """Every file the arguments name: files as given, folders searched recursively for pictures
    and videos, globs (`**` recursive) expanded, stream URLs and camera devices as live
    videos. Names that match nothing go to `on_error`.

    Outputs are named after the file (a file or glob match) or the folder's name and the
    path below it (a folder's files). Only paths are listed (a few hundred bytes each):
    10,000 inputs cost no pixel memory.
    """
    out: list[Input] = []
    for arg in args:
        path = Path(arg)
        if is_live(arg):  # outputs named after the URL, e.g. rtsp_cam.local_stream1.mp4
            name = re.sub(r"[^\w.-]+", "_", arg.split("?")[0]).strip("_")
            out.append(Input(path, PurePath(name + ".mp4"), live=arg))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_media(p))
            if not found:
                on_error(arg, "folder holds no picture or video")
            base = PurePath(path.resolve().name)
            out += [Input(p, base / p.relative_to(path)) for p in found]
        elif path.exists():
            out.append(Input(path, PurePath(path.name)))
        elif glob.has_magic(arg):
            found = sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            if not found:
                on_error(arg, "no file matches")
            out += [Input(p, PurePath(p.name)) for p in found]
        else:
            on_error(arg, "no such file or folder")
    return out


def read_frames(
    inputs: Iterable[Input], fps: float, on_error: ErrorHandler, draft_size: int | None = None
) -> Iterator[Frame]:
    """Decoded frames in input order; a file that cannot be read goes to `on_error` (with the
    reason) and the stream goes on with the next. `draft_size`: decode JPEGs as training
    pictures were (pre-cropped faces going straight to the classifier)."""
    for item in inputs:
        source = item.live or str(item.path)
        if item.live or is_video(item.path):
            try:
                for index, t, rgb, rate in read_video(item.live or item.path, fps):
                    yield Frame(source, item.name, rgb, index=index, time=t, rate=rate)
            except VideoError as err:
                on_error(source, str(err))
            continue
        try:
            img, _ = open_image(item.path, draft_size=draft_size)
        except ImageError as err:
            on_error(source, str(err))
            continue
        yield Frame(source, item.name, np.asarray(img))


def output_name(name: PurePath, video: bool) -> PurePath:
    """The annotated output's name: pictures keep JPEG/PNG suffixes, videos become MP4."""
    if video:
        return name.with_suffix(".mp4")
    return name if name.suffix.lower() in (".jpg", ".jpeg", ".png") else name.with_suffix(".png")
