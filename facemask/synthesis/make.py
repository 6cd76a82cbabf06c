"""The synthesize stage's library: which faces, what is drawn on each, and the index rows
(with provenance) of the pictures made. Synthetic rows are for the training split only."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from facemask.data.images import sha256_bytes
from facemask.data.parallel import Workers, parallel_map
from facemask.params import SynthesizeParams
from facemask.synthesis.draw import draw_mask, draw_occluder, real_texture
from facemask.synthesis.landmarks import Box, FaceFrame, crop_face_box, find_landmarks, plausible

PROVENANCE = ["synth_from", "synth_source", "synth_kind", "synth_look", "synth_box"]


@dataclass(frozen=True)
class Job:
    """One bare face and what to draw on it: (kind, look, label, texture path) per picture."""

    path: str
    source: str
    group: int
    sha256: str
    box: Box | None  # None: a folder picture with no face found
    draws: tuple[tuple[str, str, str, str | None], ...]


def bare_faces(train: pd.DataFrame, params: SynthesizeParams) -> pd.DataFrame:
    """The training rows faces are drawn on: the bare-face label of the chosen sources."""
    big = train[["width", "height"]].min(axis=1) >= params.min_side
    rows = train[(train["label"] == params.bare_label) & train["source"].isin(params.sources) & big]
    rows = rows.sort_values("sha256", kind="stable")
    if params.max_faces is not None:
        rows = rows.head(params.max_faces)
    return rows


def texture_rows(train: pd.DataFrame, params: SynthesizeParams) -> pd.DataFrame:
    """Masked crops of box-annotated sources big enough to cut a mask's fabric from."""
    boxed = train["scene"].notna() if "scene" in train else pd.Series(False, index=train.index)
    keep = (
        (train["label"] == params.texture_label)
        & boxed
        & (train["width"] >= params.texture_min_side)
    )
    return train[keep].sort_values("sha256", kind="stable")


def plan(
    train: pd.DataFrame, params: SynthesizeParams, seed: int, boxes: dict[str, Box | None]
) -> list[Job]:
    """What to draw on each bare face, fixed by the seed and the face's content hash."""
    faces = bare_faces(train, params)
    textures = texture_rows(train, params)["path"].tolist()
    # Labels first, then a placement of that label: each label gets an equal share of the
    # masks, so the drawn look says nothing of the class (with one correct placement and
    # three wrong ones, half the masks are worn correctly).
    by_label: dict[str, list[str]] = {}
    for worn, label in params.placements.items():
        if label is not None:
            by_label.setdefault(label, []).append(worn)
    labels = sorted(by_label)
    templates = [t for t in params.templates if t != "real" or textures]
    jobs = []
    for row in faces.itertuples(index=False):
        rng = np.random.default_rng([seed, int(row.sha256[:12], 16)])
        draws: list[tuple[str, str, str, str | None]] = []
        for _ in range(params.masks_per_face if labels else 0):
            label = labels[int(rng.integers(len(labels)))]
            placement = by_label[label][int(rng.integers(len(by_label[label])))]
            look = templates[int(rng.integers(len(templates)))]
            tex = textures[int(rng.integers(len(textures)))] if look == "real" else None
            draws.append((placement, look, label, tex))
        for _ in range(params.occluders_per_face if params.occluders else 0):
            kind = params.occluders[int(rng.integers(len(params.occluders)))]
            draws.append((kind, "occluder", params.occluder_label, None))
        jobs.append(
            Job(row.path, row.source, int(row.group), row.sha256, boxes.get(row.path), tuple(draws))
        )
    return jobs


def face_boxes(faces: pd.DataFrame, margin: float, detector=None) -> dict[str, Box | None]:
    """Each bare face's box; YuNet starts only when a folder picture needs it."""
    own = detector is None and faces["scene"].isna().any()
    if own:
        from facemask.detection.finders import SlimeFaceDetector

        detector = SlimeFaceDetector(threshold=0.5, upscale=1.0)
    try:
        return {row.path: face_box(row, margin, detector) for row in faces.itertuples(index=False)}
    finally:
        if own:
            detector.close()


def face_box(row, margin: float, detector) -> Box | None:
    """A crop's box from its margin; a folder picture's from the detector (largest face)."""
    if isinstance(row.scene, str) and row.scene:
        return crop_face_box(int(row.width), int(row.height), margin)
    rgb = np.asarray(Image.open(row.path).convert("RGB"))
    found = detector.detect(rgb)
    if not found:
        return None
    return max(found, key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))[0]


def _make(
    job: Job, out: str, seed: int, margin: float, hash_size: int
) -> tuple[list[dict], str | None]:
    """Draw one face's pictures (worker side): rows, or the reason it was skipped."""
    if job.box is None:
        return [], "no face found"
    crop = Image.open(job.path).convert("RGB")
    lm = find_landmarks(np.asarray(crop), job.box)
    if not plausible(lm, job.box):
        return [], "landmarks implausible"
    frame = FaceFrame(lm)
    rng = np.random.default_rng([seed, int(job.sha256[:12], 16), 1])
    rows = []
    for k, (kind, look, label, tex) in enumerate(job.draws):
        if look == "occluder":
            drawn = draw_occluder(crop, frame, kind, rng)
        else:
            texture = real_texture(Image.open(tex).convert("RGB"), margin) if tex else None
            drawn = draw_mask(crop, frame, kind, look, rng, texture)
        buf = io.BytesIO()
        drawn.image.save(buf, format="PNG", optimize=False)
        data = buf.getvalue()
        sha = sha256_bytes(data)
        path = Path(out) / f"{job.sha256[:16]}_{k}_{kind}.png"
        path.write_bytes(data)
        rows.append(
            {
                "path": path.as_posix(),
                "label": label,
                "source": "synthetic",
                "group": job.group,
                "copies": 1,
                "scene": None,
                "fixed_split": "train",
                "width": drawn.image.width,
                "height": drawn.image.height,
                "format": "PNG",
                "mode": "RGB",
                "sha256": sha,
                "phash": str(imagehash.phash(drawn.image, hash_size=hash_size)),  # as prepare's
                "published_label": label,
                "synth_from": job.path,
                "synth_source": job.source,
                "synth_kind": kind,
                "synth_look": drawn.detail,
                "synth_box": " ".join(str(c) for c in drawn.box),
            }
        )
    return rows, None


def synthesize(
    train: pd.DataFrame,
    params: SynthesizeParams,
    seed: int,
    margin: float,
    out: Path,
    hash_size: int,
    workers: Workers = 0,
    detector=None,
) -> tuple[pd.DataFrame, dict]:
    """Draw on the bare faces of `train`; write the pictures under `out`, return the index of
    what was made (pinned to train, provenance columns) and a report."""
    out.mkdir(parents=True, exist_ok=True)
    boxes = {}
    if params.masks_per_face or params.occluders_per_face:
        boxes = face_boxes(bare_faces(train, params), margin, detector)
    jobs = [j for j in plan(train, params, seed, boxes) if j.draws]
    results = parallel_map(
        partial(_make, out=str(out), seed=seed, margin=margin, hash_size=hash_size),
        jobs,
        workers,
        "synthesize",
        "face",
    )
    rows = [r for made, _ in results for r in made]
    skipped = Counter(reason for _, reason in results if reason)
    columns = list(train.columns) + [c for c in PROVENANCE if c not in train.columns]
    index = pd.DataFrame(rows, columns=columns)
    report = {
        "faces": len(jobs),
        "faces_used": len(jobs) - sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
        "pictures": len(index),
        "by_kind": {k: int(v) for k, v in sorted(Counter(index["synth_kind"]).items())},
        "by_label": {k: int(v) for k, v in sorted(Counter(index["label"]).items())},
        "by_source": {k: int(v) for k, v in sorted(Counter(index["synth_source"]).items())},
    }
    return index, report


def gallery(index: pd.DataFrame, out: Path, per_kind: int = 6, tile: int = 96) -> None:
    """Sample tiles per kind, each beside the face it was drawn on (a picture of the data:
    DVC-cached, never committed)."""
    from PIL import ImageDraw

    kinds = sorted(index["synth_kind"].unique()) if not index.empty else []
    sheet = Image.new(
        "RGB", (max(1, per_kind) * tile * 2, max(1, len(kinds)) * (tile + 14)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for r, kind in enumerate(kinds):
        rows = index[index["synth_kind"] == kind].head(per_kind)
        y = r * (tile + 14)
        draw.text((2, y), kind, fill="black")
        for c, row in enumerate(rows.itertuples(index=False)):
            for k, path in enumerate((row.synth_from, row.path)):
                sheet.paste(
                    Image.open(path).convert("RGB").resize((tile, tile)),
                    ((2 * c + k) * tile, y + 14),
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
