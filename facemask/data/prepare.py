"""Build the labelled index of every usable image, and say why each other file is not."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd

from facemask.data.dedup import conflicting_groups, duplicate_groups, summarize_groups
from facemask.data.images import IMAGE_SUFFIXES, ImageError, open_image, suffix_matches
from facemask.data.parallel import Workers, parallel_map
from facemask.data.scenes import FORMATS as SCENE_FORMATS
from facemask.data.scenes import list_scenes
from facemask.data.voc import Crop, cut_crops, cut_scenes
from facemask.params import PrepareParams

INDEX_COLUMNS = [
    "path", "label", "source", "group", "copies", "scene", "fixed_split",
    "width", "height", "format", "mode", "sha256", "phash",
]  # fmt: skip
REJECTED_COLUMNS = ["path", "source", "label", "reason"]


@dataclass
class Source:
    """One extracted source and how its names map onto our classes.

    `format` "folders": class = first folder under `root`. "voc": PASCAL VOC boxes in
    `root/annotations`, images in `root/images`; "yolo", "coco", "csv": the other scene
    layouts of facemask.data.scenes; each box becomes a face crop.
    `split` forces every image of the source into one split (say, synthetic data that
    may train but must not be tested on). `attributes` is a regex whose named groups,
    matched against each file name, become `attr_<name>` columns; `attributes_csv` is
    a sidecar CSV (under `root`) with a `file` column (path relative to `root`).
    `folder_attributes` reads folders named `<class folder>-<value>` (cloth-mask-female):
    it maps each value to the attributes it sets ({female: {gender: female}}); the copies
    of one picture filed under several such folders become one row carrying them all.
    """

    name: str
    root: Path
    classes: Mapping[str, str]
    format: str = "folders"
    images: str = "images"
    annotations: str = "annotations"
    split: str | None = None
    attributes: str | None = None
    attributes_csv: str | None = None
    folder_attributes: Mapping[str, Mapping[str, str]] | None = None


SOURCE_KEYS = (
    "format", "images", "annotations", "split", "attributes", "attributes_csv", "folder_attributes",
)  # fmt: skip


def sources_from_specs(
    specs: Sequence[Mapping], raw: Path, classes: Sequence[str], what: str = "data.sources"
) -> list[Source]:
    """Sources of params.yaml specs, each extracted under raw/<name>; a spec mapping onto a
    class the task does not have is refused, naming the spec."""
    sources = []
    for spec in specs:
        name = spec.get("name") or "?"
        if not spec.get("classes"):
            raise ValueError(f"{what}[{name}]: no `classes` map (folder or box name -> class)")
        unknown = set(spec["classes"].values()) - set(classes)
        if unknown:
            raise ValueError(
                f"{what}[{name}]: maps onto {sorted(unknown)}, "
                f"which are not in classes {sorted(classes)}"
            )
        extra = {k: spec[k] for k in SOURCE_KEYS if spec.get(k) is not None}
        sources.append(Source(name, raw / name, spec["classes"], **extra))
    return sources


@dataclass
class Candidate:
    """A file to inspect, with what we already know about it."""

    path: Path
    label: str
    source: str
    scene: str = ""  # photos sharing a scene (crops of one photo) stay in one split
    relative: str = ""  # path under the source root, for sidecar attributes
    attrs: dict = field(default_factory=dict)  # from the folder name (folder_attributes)


@dataclass
class Inspection:
    row: dict | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def parse_folder(name: str, source: Source) -> tuple[str | None, dict]:
    """(class, attributes) of a class folder's name; class None when it maps to nothing."""
    base, _, value = name.rpartition("-")
    if source.folder_attributes and base and value in source.folder_attributes:
        return source.classes.get(base), dict(source.folder_attributes[value])
    return source.classes.get(name), {}


def list_files(source: Source) -> tuple[list[tuple[Path, str, dict]], list[str]]:
    """Files under each mapped class folder (recursively) with the folder's attributes, and
    the unmapped folder names."""
    if not source.root.is_dir():
        raise FileNotFoundError(f"source {source.name!r}: folder {source.root} does not exist")
    found, unmapped = [], []
    for folder in sorted(p for p in source.root.iterdir() if p.is_dir()):
        label, attrs = parse_folder(folder.name, source)
        if label is None:
            unmapped.append(folder.name)
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            found += [(Path(dirpath) / f, label, attrs) for f in sorted(filenames)]
    return found, unmapped


def merge_folder_copies(index: pd.DataFrame, sources: Sequence[str]) -> pd.DataFrame:
    """One row per (source, picture bytes, label) of `sources`, its attributes merged.

    A picture filed once by gender and once by race carries both; one filed under two values
    of one attribute (label noise in the source) carries both, joined by "|".
    """
    mine = index["source"].isin(sources)
    if not mine.any():
        return index
    attrs = [c for c in index.columns if c.startswith("attr_")]

    def join(values: pd.Series) -> str | None:
        seen = sorted({str(v) for v in values.dropna()})
        return "|".join(seen) if seen else None

    keys = ["source", "sha256", "label"]
    part = index[mine]
    merged = part.groupby(keys, sort=False)[attrs].agg(join) if attrs else None
    first = part.drop_duplicates(keys).set_index(keys)
    if merged is not None:
        first[attrs] = merged.loc[first.index, attrs]
    out = pd.concat([index[~mine], first.reset_index()[index.columns]], ignore_index=True)
    return out.sort_values("path", kind="stable").reset_index(drop=True)


def inspect_file(path: Path, min_side: int, max_pixels: int, hash_size: int) -> Inspection:
    """Decode one file and describe it, or give the reason it is unusable."""
    try:
        # The perceptual hash works on a 32-64 px thumbnail, so a draft decode at 256 px
        # loses nothing it needs and skips most of the work on multi-megapixel photos.
        img, info = open_image(path, draft_size=256, max_pixels=max_pixels)
    except ImageError as err:
        # Every file gets a decode attempt whatever its name (real photos come named
        # "x.jpg_1088Wx1632H"); the name only sharpens the reason when it fails.
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            return Inspection(reason=f"{err} (file name suffix {path.suffix or 'none'!r})")
        return Inspection(reason=str(err))
    if min(info.width, info.height) < min_side:
        return Inspection(
            reason=f"too small: {info.width}x{info.height}, below prepare.min_side={min_side}"
        )
    notes = [] if suffix_matches(path, info.format) else ["suffix_mismatch"]
    row = {
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "mode": info.mode,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "phash": str(imagehash.phash(img, hash_size=hash_size)),
    }
    return Inspection(row=row, notes=notes)


def inspect_files(
    paths: list[Path], min_side: int, max_pixels: int, hash_size: int, workers: Workers
) -> list[Inspection]:
    """inspect_file over many files, in parallel where it pays."""
    work = partial(inspect_file, min_side=min_side, max_pixels=max_pixels, hash_size=hash_size)
    return parallel_map(work, paths, workers, "prepare", "img")


def list_candidates(
    src: Source,
    crops_dir: Path,
    crop_margin: float,
    min_box: int,
    max_pixels: int,
    workers: Workers,
) -> tuple[list[Candidate], list[dict], list[str]]:
    """Files (or freshly cut face crops) of one source, rejected boxes, unmapped folders."""
    if src.format == "folders":
        files, unmapped = list_files(src)
        cands = [
            Candidate(p, label, src.name, relative=p.relative_to(src.root).as_posix(), attrs=a)
            for p, label, a in files
        ]
        return cands, [], unmapped
    if src.format not in SCENE_FORMATS:
        known = ", ".join(("folders", *SCENE_FORMATS))
        raise ValueError(f"source {src.name!r}: unknown format {src.format!r} ({known})")
    if src.format == "voc":  # its folder names are params (annotations, images)
        crops, bad = cut_crops(
            src.root / src.annotations,
            src.root / src.images,
            crops_dir / src.name,
            src.classes,
            crop_margin,
            min_box,
            max_pixels,
            workers,
        )
    else:
        scenes, unreadable = list_scenes(src.root, fmt=src.format)
        crops, bad = cut_scenes(
            scenes, crops_dir / src.name, src.classes, crop_margin, min_box, max_pixels,
            workers, src.name,
        )  # fmt: skip
        bad = [
            Crop(None, None, "", why, where) for where, why in map(_split_reason, unreadable)
        ] + bad
    cands = []
    for c in crops:
        # cut_scenes returns rejected boxes apart: each crop has its file and label
        assert c.path is not None and c.label is not None
        cands.append(Candidate(c.path, c.label, src.name, scene=f"{src.name}/{c.scene}"))
    rejected = [
        {"path": c.origin, "source": src.name, "label": c.label or "", "reason": c.reason}
        for c in bad
    ]
    return cands, rejected, []


def _split_reason(text: str) -> tuple[str, str]:
    """`path: reason` (facemask.data.scenes' unreadable list) -> (path, reason)."""
    where, _, why = text.partition(": ")
    return where, why or text


def read_attributes(src: Source, cands: list[Candidate]) -> pd.DataFrame:
    """attr_* columns for a source's files, from a file-name regex and/or a sidecar CSV."""
    out = pd.DataFrame(index=range(len(cands)))
    if any(c.attrs for c in cands):
        folder = pd.DataFrame([c.attrs for c in cands], index=out.index)
        out = out.join(folder.add_prefix("attr_"))
    if src.attributes:
        pattern = re.compile(src.attributes)
        found = [m.groupdict() if (m := pattern.search(c.path.name)) else {} for c in cands]
        out = out.join(pd.DataFrame(found, index=out.index).add_prefix("attr_"))
    if src.attributes_csv:
        side = pd.read_csv(src.root / src.attributes_csv, dtype=str)
        if "file" not in side.columns:
            raise ValueError(f"{src.root / src.attributes_csv}: needs a 'file' column")
        side = side.set_index("file").add_prefix("attr_")
        side = side.reindex([c.relative for c in cands]).reset_index(drop=True)
        # merge, not join: join's rsuffix is deprecated in pandas 3.1, its suffixes too new.
        out = out.merge(side, how="left", left_index=True, right_index=True, suffixes=("", "_csv"))
    return out


def _attribute(index: pd.DataFrame, name: str) -> pd.Series:
    """The `attr_<name>` column, or an error naming the attributes there are."""
    col = f"attr_{name}"
    if col not in index.columns:
        have = sorted(c.removeprefix("attr_") for c in index.columns if c.startswith("attr_"))
        raise ValueError(
            f"prepare.group_by names attribute {name!r}, but the sources give {have or 'none'}:"
            " add it to a source's `attributes` regex or `attributes_csv`"
        )
    return index[col]


def gather_candidates(
    sources: Sequence[Source],
    crops_dir: Path,
    crop_margin: float,
    min_box: int,
    max_pixels: int,
    workers: Workers,
) -> tuple[list[Candidate], pd.DataFrame, list[dict], dict[str, list[str]]]:
    """Every source's candidates sorted by path, their attributes row for row, the boxes
    rejected while cutting crops, and the unmapped folders per source."""
    cands, rejected, unmapped, attrs = [], [], {}, []
    for src in sources:
        found, bad, skipped = list_candidates(
            src, crops_dir, crop_margin, min_box, max_pixels, workers
        )
        cands += found
        rejected += bad
        attrs.append(read_attributes(src, found))
        if skipped:
            unmapped[src.name] = skipped
    if not cands:
        raise ValueError(
            "no files found under any mapped class folder; folders seen but not mapped: "
            f"{unmapped or 'none'} (check data.sources[].classes and subdir)"
        )
    attributes = pd.concat(attrs, ignore_index=True)
    # Sorted by path so that the same inputs give byte-identical files.
    order = sorted(range(len(cands)), key=lambda i: cands[i].path.as_posix())
    cands = [cands[i] for i in order]
    attributes = attributes.iloc[order].reset_index(drop=True)
    return cands, attributes, rejected, unmapped


def inspect_candidates(
    cands: Sequence[Candidate],
    attributes: pd.DataFrame,
    fixed: Mapping[str, str],
    min_side: int,
    max_pixels: int,
    hash_size: int,
    workers: Workers,
) -> tuple[pd.DataFrame, list[dict], int]:
    """Decode and validate every candidate: (index of the usable ones, without `group` and
    `copies`; rejected rows of the others; how many have a suffix that lies).

    `fixed` maps a source name to the split its pictures are pinned to ("" for none).
    """
    results = inspect_files([c.path for c in cands], min_side, max_pixels, hash_size, workers)
    rows, rejected, keep, mismatched = [], [], [], 0
    for i, (c, res) in enumerate(zip(cands, results, strict=True)):
        meta = {"path": c.path.as_posix(), "label": c.label, "source": c.source}
        if res.row is None:
            rejected.append({**meta, "reason": res.reason})
            continue
        rows.append({**meta, "scene": c.scene, "fixed_split": fixed[c.source], **res.row})
        keep.append(i)
        mismatched += "suffix_mismatch" in res.notes
    index = pd.DataFrame(rows, columns=[c for c in INDEX_COLUMNS if c not in ("group", "copies")])
    index = index.join(attributes.iloc[keep].reset_index(drop=True).dropna(axis=1, how="all"))
    return index, rejected, mismatched


def drop_conflicts(
    index: pd.DataFrame, near_duplicate_distance: int
) -> tuple[pd.DataFrame, np.ndarray, list[dict], int]:
    """Drop every copy of a picture that its copies label differently: (the index kept,
    the copy group of each row kept, rejected rows saying why, groups dropped)."""
    # Conflicts are judged on copies of one picture only: crops of one crowd photo
    # rightly carry different labels.
    copies = duplicate_groups(index["sha256"], index["phash"], near_duplicate_distance)
    conflicts = conflicting_groups(index.assign(group=copies))
    rejected = []
    for _, r in index[np.isin(copies, conflicts)].iterrows():
        same = index.loc[copies == copies[r.name], "label"]
        others = ", ".join(sorted(set(same) - {r["label"]}))
        rejected.append(
            {
                "path": r["path"],
                "source": r["source"],
                "label": r["label"],
                "reason": f"conflicting labels: a copy of this picture is {others}",
            }
        )
    keep = ~np.isin(copies, conflicts)
    return index[keep].reset_index(drop=True), copies[keep], rejected, len(conflicts)


def add_groups(index: pd.DataFrame, copies: np.ndarray, group_by: Sequence[str]) -> pd.DataFrame:
    """Index with its `copies` and `group` columns (in place, and returned)."""
    # Two groupings: `copies` (one picture, however resized) is the unit of counting in
    # evaluation; `group` (copies plus crops of one scene, plus `group_by`) is the unit of
    # splitting. Dropping whole copy groups leaves the others as they were, so both build
    # on `copies` instead of comparing every pair of hashes again (quadratic in files).
    index.insert(3, "copies", pd.factorize(copies)[0])
    index.insert(
        3,
        "group",
        duplicate_groups(
            index["copies"], same=[index["scene"], *(_attribute(index, a) for a in group_by)]
        ),
    )
    return index


def index_report(
    index: pd.DataFrame,
    rejected: pd.DataFrame,
    *,
    files_seen: int,
    suffix_mismatch: int,
    conflicts_dropped: int,
    unmapped: Mapping[str, list[str]],
    folder_copies_merged: int,
) -> dict:
    """The prepare report: counts of what was indexed, rejected, grouped and merged."""
    return {
        "files_seen": files_seen,
        "images_indexed": len(index),
        "files_rejected": len(rejected),
        "per_class": index["label"].value_counts().sort_index().to_dict(),
        "per_source": index["source"].value_counts().sort_index().to_dict(),
        "rejected_by_reason": _reason_counts(rejected["reason"]),
        "suffix_mismatch": suffix_mismatch,
        "scenes": int(index.loc[index["scene"] != "", "scene"].nunique()),
        **summarize_groups(index.assign(group=index["copies"])),
        "split_groups": int(index["group"].nunique()),
        "conflicting_label_groups_dropped": conflicts_dropped,
        "unmapped_folders": unmapped,
        "folder_copies_merged": folder_copies_merged,
    }


def build_index(
    sources: Iterable[Source],
    crops_dir: Path | None = None,
    min_side: int = 32,
    max_pixels: int = 89_478_485,
    hash_size: int = 16,
    near_duplicate_distance: int = -1,
    crop_margin: float = 0.2,
    min_box: int = 16,
    workers: Workers = 0,
    group_by: Sequence[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Inspect every file of every source; return (index, rejected, report).

    Rows are sorted by path so that the same inputs give byte-identical files.
    `group_by` names attributes (e.g. a person id) whose equal values must share a split.
    """
    sources = list(sources)
    cands, attributes, rejected, unmapped = gather_candidates(
        sources, crops_dir or Path("data/crops"), crop_margin, min_box, max_pixels, workers
    )
    fixed = {s.name: s.split or "" for s in sources}
    index, bad, mismatched = inspect_candidates(
        cands, attributes, fixed, min_side, max_pixels, hash_size, workers
    )
    rejected += bad
    merged_copies = len(index)
    index = merge_folder_copies(index, [s.name for s in sources if s.folder_attributes])
    merged_copies -= len(index)
    index, copies, bad, n_conflicts = drop_conflicts(index, near_duplicate_distance)
    rejected += bad
    index = add_groups(index, copies, group_by)
    rejected_df = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values("path")
    report = index_report(
        index,
        rejected_df,
        # Boxes rejected while cutting crops (`annotation#k`) were seen but never became files.
        files_seen=len(cands) + sum(1 for r in rejected if "#" in r["path"]),
        suffix_mismatch=mismatched,
        conflicts_dropped=n_conflicts,
        unmapped=unmapped,
        folder_copies_merged=merged_copies,
    )
    return index, rejected_df.reset_index(drop=True), report


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    """Group free-text reasons by their kind (the text before the first colon)."""
    return reasons.str.split(":").str[0].value_counts().sort_index().to_dict()


PREPARE_KEYS = (
    "crop_margin", "min_box", "min_side", "max_pixels", "hash_size", "near_duplicate_distance",
    "workers",
)  # fmt: skip


def build_index_with(
    sources: Iterable[Source], crops_dir: Path, p: PrepareParams, group_by: Sequence[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """build_index with params.yaml's `prepare` settings (the keys in PREPARE_KEYS); the
    per-file work runs on `prepare.cluster` when it names a Dask scheduler."""
    settings = p.model_dump(include=set(PREPARE_KEYS))
    settings["workers"] = p.cluster or p.workers
    return build_index(sources, crops_dir=crops_dir, group_by=group_by, **settings)
