"""Face crops from PASCAL VOC box annotations (one crop per box, grouped by scene)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from defusedxml import ElementTree

from facemask.data.images import IMAGE_SUFFIXES, ImageError, open_image
from facemask.data.parallel import Workers, parallel_map


@dataclass(frozen=True)
class Box:
    name: str  # the annotation's class name, before mapping
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class Scene:
    """One annotated photo: its image file, annotation file and boxes."""

    image: Path
    annotation: Path
    boxes: tuple[Box, ...]


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message says why."""


def read_voc(xml_path: Path, images: Path) -> Scene:
    """Parse one VOC file (defusedxml: no entity expansion from untrusted archives)."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except Exception as err:  # ParseError and defusedxml's forbidden-entity errors
        raise AnnotationError(f"unreadable annotation: {err}") from err
    filename = (root.findtext("filename") or "").strip()
    image = images / filename if filename else None
    if image is None or not image.is_file():
        # Some exports name the image differently; fall back to the annotation's stem.
        matches = [
            p
            for p in sorted(images.glob(xml_path.stem + ".*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not matches:
            raise AnnotationError(f"no image {filename or xml_path.stem + '.*'} in {images}")
        image = matches[0]
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        try:
            coords = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError) as err:
            raise AnnotationError(f"object without a numeric bndbox: {err}") from err
        boxes.append(Box((obj.findtext("name") or "").strip(), *coords))
    return Scene(image, xml_path, tuple(boxes))


def square_crop_box(box: Box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """A square around the box, `margin` of its longer side added on every side, clipped.

    Square, because the pipeline squashes every image to a square: a tall face box
    squashed would change the face's proportions, which the mask cues depend on.
    """
    cx, cy = (box.xmin + box.xmax) / 2, (box.ymin + box.ymax) / 2
    half = max(box.xmax - box.xmin, box.ymax - box.ymin) * (0.5 + margin)
    x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
    x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Crop:
    path: Path | None  # None when the box was rejected
    label: str | None
    scene: str
    reason: str | None = None  # why there is no crop
    origin: str = ""  # "annotation.xml#k", for the rejected list


def cut_scene(
    scene: Scene,
    out_dir: Path,
    classes: Mapping[str, str],
    margin: float,
    min_box: int,
    max_pixels: int | None = None,
) -> list[Crop]:
    """Write one PNG per usable box; return every box's crop or reason."""
    key = scene.image.stem
    origin = [f"{scene.annotation.as_posix()}#{k}" for k in range(len(scene.boxes))]
    try:
        img, _ = open_image(scene.image, max_pixels=max_pixels)
    except ImageError as err:
        return [Crop(None, None, key, f"scene image unusable: {err}", o) for o in origin]
    out = []
    for k, box in enumerate(scene.boxes):
        label = classes.get(box.name)
        w, h = box.xmax - box.xmin, box.ymax - box.ymin
        if label is None:
            out.append(Crop(None, None, key, f"unmapped box class: {box.name!r}", origin[k]))
        elif min(w, h) < min_box:
            out.append(
                Crop(
                    None,
                    label,
                    key,
                    f"box too small: {w:g}x{h:g} px, below prepare.min_box={min_box}",
                    origin[k],
                )
            )
        else:
            x0, y0, x1, y1 = square_crop_box(box, img.width, img.height, margin)
            if x1 - x0 < 1 or y1 - y0 < 1:
                out.append(Crop(None, label, key, "box outside the image", origin[k]))
                continue
            path = out_dir / f"{key}_{k:03d}.png"
            img.crop((x0, y0, x1, y1)).save(path, optimize=False)
            out.append(Crop(path, label, key, None, origin[k]))
    return out


def cut_crops(
    annotations: Path,
    images: Path,
    out_dir: Path,
    classes: Mapping[str, str],
    margin: float,
    min_box: int,
    max_pixels: int | None = None,
    workers: Workers = 0,
) -> tuple[list[Crop], list[Crop]]:
    """Crops of every annotated scene in a VOC folder pair: (crops, rejected boxes/files)."""
    if not annotations.is_dir() or not images.is_dir():
        raise FileNotFoundError(f"VOC source needs folders {annotations} and {images}")
    scenes, bad = [], []
    for xml in sorted(annotations.glob("*.xml")):
        try:
            scenes.append(read_voc(xml, images))
        except AnnotationError as err:
            bad.append(Crop(None, None, xml.stem, str(err), xml.as_posix()))
    crops, rejected = cut_scenes(
        scenes, out_dir, classes, margin, min_box, max_pixels, workers, annotations.parent.name
    )
    return crops, bad + rejected


def cut_scenes(
    scenes: list[Scene],
    out_dir: Path,
    classes: Mapping[str, str],
    margin: float,
    min_box: int,
    max_pixels: int | None = None,
    workers: Workers = 0,
    desc: str = "",
) -> tuple[list[Crop], list[Crop]]:
    """Crops of every box of `scenes` (any annotation format): (crops, rejected boxes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = partial(
        cut_scene,
        out_dir=out_dir,
        classes=classes,
        margin=margin,
        min_box=min_box,
        max_pixels=max_pixels,
    )
    results = parallel_map(work, scenes, workers, f"crops {desc}", "scene", 8, min_items=32)
    crops = [c for r in results for c in r]
    return [c for c in crops if c.path], [c for c in crops if not c.path]
