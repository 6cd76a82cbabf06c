"""Build the labelled index of every usable image, and say why each other file is not."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import imagehash
import pandas as pd
from tqdm import tqdm

from facemask.dedup import conflicting_groups, duplicate_groups, summarize_groups
from facemask.images import IMAGE_SUFFIXES, ImageError, open_image, suffix_matches

INDEX_COLUMNS = [
    "path",
    "label",
    "source",
    "group",
    "width",
    "height",
    "format",
    "mode",
    "sha256",
    "phash",
]
REJECTED_COLUMNS = ["path", "source", "label", "reason"]


@dataclass
class Source:
    """One extracted source: its folder and how its folder names map onto our classes."""

    name: str
    root: Path
    classes: Mapping[str, str]


@dataclass
class Inspection:
    row: dict | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def list_files(source: Source) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files under each mapped class folder (recursively), and the unmapped folder names."""
    if not source.root.is_dir():
        raise FileNotFoundError(f"source {source.name!r}: folder {source.root} does not exist")
    found, unmapped = [], []
    for folder in sorted(p for p in source.root.iterdir() if p.is_dir()):
        label = source.classes.get(folder.name)
        if label is None:
            unmapped.append(folder.name)
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            found += [(Path(dirpath) / f, label) for f in sorted(filenames)]
    return found, unmapped


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
    paths: list[Path], min_side: int, max_pixels: int, hash_size: int, workers: int
) -> list[Inspection]:
    """inspect_file over many files, in parallel where it pays."""
    work = partial(inspect_file, min_side=min_side, max_pixels=max_pixels, hash_size=hash_size)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 64:
        return [work(p) for p in tqdm(paths, desc="prepare", unit="img")]
    with Pool(workers) as pool:
        it = pool.imap(work, paths, chunksize=16)
        return list(tqdm(it, total=len(paths), desc="prepare", unit="img"))


def build_index(
    sources: Iterable[Source],
    min_side: int = 32,
    max_pixels: int = 89_478_485,
    hash_size: int = 16,
    near_duplicate_distance: int = -1,
    workers: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Inspect every file of every source; return (index, rejected, report).

    Rows are sorted by path so that the same inputs give byte-identical files.
    """
    listed, unmapped = [], {}
    for src in sources:
        files, skipped = list_files(src)
        listed += [(p, label, src.name) for p, label in files]
        if skipped:
            unmapped[src.name] = skipped
    if not listed:
        raise ValueError(
            "no files found under any mapped class folder; folders seen but not mapped: "
            f"{unmapped or 'none'} (check data.sources[].classes and subdir)"
        )
    listed.sort(key=lambda t: t[0].as_posix())
    results = inspect_files([p for p, _, _ in listed], min_side, max_pixels, hash_size, workers)

    rows, rejected, mismatched = [], [], 0
    for (path, label, source), res in zip(listed, results, strict=True):
        meta = {"path": path.as_posix(), "label": label, "source": source}
        if res.row is None:
            rejected.append({**meta, "reason": res.reason})
        else:
            rows.append({**meta, **res.row})
            mismatched += "suffix_mismatch" in res.notes
    index = pd.DataFrame(rows, columns=[c for c in INDEX_COLUMNS if c != "group"])
    index.insert(
        3, "group", duplicate_groups(index["sha256"], index["phash"], near_duplicate_distance)
    )

    # A picture filed under two labels cannot teach either; drop every copy and say so.
    conflicts = conflicting_groups(index)
    dropped = index[index["group"].isin(conflicts)]
    for _, r in dropped.iterrows():
        others = sorted(set(index.loc[index["group"] == r["group"], "label"]) - {r["label"]})
        rejected.append(
            {
                "path": r["path"],
                "source": r["source"],
                "label": r["label"],
                "reason": f"conflicting labels: duplicate group {r['group']} "
                f"is also {', '.join(others)}",
            }
        )
    index = index[~index["group"].isin(conflicts)].reset_index(drop=True)
    rejected_df = pd.DataFrame(rejected, columns=REJECTED_COLUMNS).sort_values("path")

    report = {
        "files_seen": len(listed),
        "images_indexed": len(index),
        "files_rejected": len(rejected_df),
        "per_class": index["label"].value_counts().sort_index().to_dict(),
        "per_source": index["source"].value_counts().sort_index().to_dict(),
        "rejected_by_reason": _reason_counts(rejected_df["reason"]),
        "suffix_mismatch": mismatched,
        **summarize_groups(index),
        "conflicting_label_groups_dropped": len(conflicts),
        "unmapped_folders": unmapped,
    }
    return index, rejected_df.reset_index(drop=True), report


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    """Group free-text reasons by their kind (the text before the first colon)."""
    return reasons.str.split(":").str[0].value_counts().sort_index().to_dict()
