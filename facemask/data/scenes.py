"""Labelled scenes (photos with face boxes) in the layouts public sets ship them in.

Every reader gives the same `Scene` objects (image, annotation file, boxes in pixels, xyxy),
so the scenes evaluation and the scenes index treat PASCAL VOC, YOLO txt, COCO json and a
one-row-per-box CSV alike:

- `voc`: `annotations/*.xml` (or PASCAL's `Annotations/`) and `images/` (or `JPEGImages/`);
- `yolo`: `labels/*.txt` (`class cx cy w h`, normalised 0-1) beside `images/`, class names
  one a line in `classes.txt` or `obj.names`, or under `names:` in `data.yaml`;
- `coco`: one `*.json` with `images`, `annotations` (`bbox` = x, y, w, h) and `categories`,
  images beside it or in `images/`;
- `csv`: one `*.csv` with a row per box: `class,x,y,w,h` (top-left corner and size in pixels)
  and the image's path in `image` or `raw_img_dir` (dataroots' layout).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from facemask.data.images import IMAGE_SUFFIXES
from facemask.data.voc import AnnotationError, Box, Scene, read_voc

FORMATS = ("voc", "yolo", "coco", "csv")
VOC_ANNOTATIONS = ("annotations", "Annotations")
VOC_IMAGES = ("images", "JPEGImages")
YOLO_NAMES = ("classes.txt", "obj.names")
CSV_IMAGE_COLUMNS = ("image", "raw_img_dir")
INDEX_COLUMNS = ["scene", "image", "box", "name", "xmin", "ymin", "xmax", "ymax", "side"]


def _first_dir(root: Path, names: Iterable[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _image_for(stem: str, images: Path) -> Path | None:
    hits = [p for p in sorted(images.glob(stem + ".*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    return hits[0] if hits else None


def detect_format(root: Path) -> str:
    """The layout of a scene folder, from what it holds; a clear error when none fits."""
    if _first_dir(root, VOC_ANNOTATIONS) and _first_dir(root, VOC_IMAGES):
        return "voc"
    if (root / "labels").is_dir() and (root / "images").is_dir():
        return "yolo"
    if len(list(root.glob("*.json"))) == 1:
        return "coco"
    if len(list(root.glob("*.csv"))) == 1:
        return "csv"
    raise FileNotFoundError(
        f"{root}: no scene layout found (VOC annotations/ + images/, YOLO labels/ + images/,"
        " one COCO *.json, or one box *.csv)"
    )


# --------------------------------------------------------------------------- readers
def read_voc_folder(root: Path) -> tuple[list[Scene], list[str]]:
    annotations, images = _first_dir(root, VOC_ANNOTATIONS), _first_dir(root, VOC_IMAGES)
    if annotations is None or images is None:
        raise FileNotFoundError(f"{root}: a VOC folder needs annotations/ and images/")
    scenes, bad = [], []
    for xml in sorted(annotations.glob("*.xml")):
        try:
            scenes.append(read_voc(xml, images))
        except AnnotationError as err:
            bad.append(f"{xml}: {err}")
    return scenes, bad


def yolo_names(root: Path) -> list[str]:
    """Class names by YOLO index, from classes.txt / obj.names or data.yaml's `names`."""
    for name in YOLO_NAMES:
        if (root / name).is_file():
            return [ln.strip() for ln in (root / name).read_text().splitlines() if ln.strip()]
    if (root / "data.yaml").is_file():
        names = (yaml.safe_load((root / "data.yaml").read_text()) or {}).get("names")
        if isinstance(names, dict):  # ultralytics writes {0: name, 1: name}
            return [names[k] for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    raise FileNotFoundError(f"{root}: YOLO class names need classes.txt, obj.names or data.yaml")


def read_yolo(txt: Path, images: Path, names: list[str]) -> Scene:
    """One YOLO label file: normalised centre and size -> pixel corners of its image."""
    image = _image_for(txt.stem, images)
    if image is None:
        raise AnnotationError(f"no image {txt.stem}.* in {images}")
    with Image.open(image) as img:
        width, height = img.size
    boxes = []
    for n, line in enumerate(txt.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            fk, fcx, fcy, fw, fh = line.split()[:5]
            k, cx, cy, w, h = int(fk), float(fcx), float(fcy), float(fw), float(fh)
        except ValueError as err:
            raise AnnotationError(f"line {n}: not `class cx cy w h`: {line!r}") from err
        if not 0 <= k < len(names):
            raise AnnotationError(f"line {n}: class {k} not in the {len(names)} class names")
        boxes.append(
            Box(
                names[k],
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            )
        )
    return Scene(image, txt, tuple(boxes))


def read_yolo_folder(root: Path) -> tuple[list[Scene], list[str]]:
    names = yolo_names(root)
    scenes, bad = [], []
    for txt in sorted((root / "labels").glob("*.txt")):
        try:
            scenes.append(read_yolo(txt, root / "images", names))
        except (AnnotationError, OSError) as err:
            bad.append(f"{txt}: {err}")
    return scenes, bad


def read_coco(path: Path) -> tuple[list[Scene], list[str]]:
    """Scenes of one COCO json (images without annotations are scenes with no face)."""
    try:
        doc = json.loads(path.read_text())
        cats = {c["id"]: c["name"] for c in doc["categories"]}
        images = {im["id"]: im["file_name"] for im in doc["images"]}
    except (ValueError, KeyError, TypeError) as err:
        raise AnnotationError(f"{path}: not a COCO file ({err!r})") from err
    boxes: dict[int, list[Box]] = {i: [] for i in images}
    bad = []
    for k, ann in enumerate(doc.get("annotations", [])):
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[ann["image_id"]].append(Box(cats[ann["category_id"]], x, y, x + w, y + h))
        except (KeyError, TypeError, ValueError) as err:
            bad.append(f"{path}: annotation {k}: {err!r}")
    scenes = []
    for image_id, name in images.items():
        image = next(
            (d / name for d in (path.parent, path.parent / "images") if (d / name).is_file()),
            None,
        )
        if image is None:
            bad.append(f"{path}: no image {name} beside it or in images/")
            continue
        scenes.append(Scene(image, path, tuple(boxes[image_id])))
    return sorted(scenes, key=lambda s: s.image.stem), bad


def _resolve(root: Path, name: str) -> Path | None:
    """A CSV's image path: as given under root, or with leading folders dropped (a path
    written from the source repository's root, like dataroots' data/raw_images/0.jpg)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    for k in range(len(parts)):
        candidate = root.joinpath(*parts[k:])
        if candidate.is_file():
            return candidate
    return None


def read_box_csv(path: Path) -> tuple[list[Scene], list[str]]:
    """Scenes of a one-row-per-box CSV: class, x, y, w, h and an image column."""
    frame = pd.read_csv(path)
    column = next((c for c in CSV_IMAGE_COLUMNS if c in frame.columns), None)
    missing = [c for c in ("class", "x", "y", "w", "h") if c not in frame.columns]
    if column is None or missing:
        need = missing + ([] if column else ["image (or raw_img_dir)"])
        raise AnnotationError(f"{path}: box CSV lacks column(s) {', '.join(need)}")
    scenes, bad = [], []
    for name, rows in frame.groupby(column, sort=False):
        image = _resolve(path.parent, str(name))
        if image is None:
            bad.append(f"{path}: no image {name} under {path.parent}")
            continue
        try:
            boxes = tuple(
                Box(str(c), float(x), float(y), float(x) + float(w), float(y) + float(h))
                for c, x, y, w, h in rows[["class", "x", "y", "w", "h"]].itertuples(index=False)
            )
        except (TypeError, ValueError) as err:
            bad.append(f"{path}: {name}: a box that is not numeric ({err})")
            continue
        scenes.append(Scene(image, path, boxes))
    return sorted(scenes, key=lambda s: s.image.stem), bad


def list_scenes(
    root: Path, ids: set[str] | None = None, fmt: str = "auto"
) -> tuple[list[Scene], list[str]]:
    """The labelled scenes under `root` in any supported layout (`fmt`, or detected), those
    whose image stem is in `ids` only when given; and what could not be read, with why."""
    root = Path(root)
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt not in FORMATS:
        raise ValueError(f"unknown scene format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "voc":
        scenes, bad = read_voc_folder(root)
    elif fmt == "yolo":
        scenes, bad = read_yolo_folder(root)
    else:
        files = sorted(root.glob("*.json" if fmt == "coco" else "*.csv"))
        if len(files) != 1:
            raise FileNotFoundError(f"{root}: a {fmt} scene set needs exactly one file")
        scenes, bad = (read_coco if fmt == "coco" else read_box_csv)(files[0])
    if ids is not None:
        scenes = [s for s in scenes if s.image.stem in ids]
    return scenes, bad


def scenes_index(scenes: Iterable[Scene], source: str = "") -> pd.DataFrame:
    """One row per labelled box: scene id, image, box number, class name, corners and the
    box's longer side (the face size the recall tables bin by)."""
    rows = []
    for s in scenes:
        scene = f"{source}/{s.image.stem}" if source else s.image.stem
        for k, b in enumerate(s.boxes):
            side = max(b.xmax - b.xmin, b.ymax - b.ymin)
            corners = [b.xmin, b.ymin, b.xmax, b.ymax]
            rows.append([scene, s.image.as_posix(), k, b.name, *corners, side])
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def read_scene_ids(path: str | os.PathLike) -> set[str]:
    """Scene ids from a CSV with a `scene` column (a split CSV: `source/stem`) -> stems."""
    frame = pd.read_csv(path, usecols=["scene"], dtype=str).dropna()
    return {s.rsplit("/", 1)[-1] for s in frame["scene"] if s}


def select_scenes(
    root: Path,
    scenes: str,
    exclude: Sequence[Path] = (),
    fmt: str = "auto",
    sample: int | None = None,
    seed: int = 0,
) -> tuple[list[Scene], list[str]]:
    """The labelled scenes of `root` to score, and the unreadable ones: `scenes` is `all` or
    a CSV whose `scene` column lists them; scenes the `exclude` CSVs list (the splits that
    train) are left out; `sample` keeps a fixed random subset (by `seed`)."""
    ids = None if scenes == "all" else read_scene_ids(scenes)
    listed, bad = list_scenes(root, ids, fmt)
    seen = set().union(*(read_scene_ids(p) for p in exclude))
    listed = [s for s in listed if s.image.stem not in seen]
    if sample is not None and len(listed) > sample:
        # A quicker run whose figure is still unbiased.
        pick = np.random.default_rng(seed).choice(len(listed), sample, replace=False)
        listed = [listed[i] for i in sorted(pick)]
    if not listed:
        raise ValueError(f"{root}: no annotated scene" + ("" if ids is None else f" in {scenes}"))
    return listed, bad
