"""Evaluate a trained model on any folder of class sub-folders (users' own photos)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from facemask.data.external import count_files, unique_pictures
from facemask.data.prepare import Source, build_index
from facemask.evaluation.scorecard import frame_metrics, score_frame
from facemask.models.factory import ModelCard


def evaluate_folder(
    model: nn.Module,
    card: ModelCard,
    folder: Path,
    class_map: dict[str, str] | None = None,
    batch_size: int = 64,
    abstain: float = 0.0,
) -> tuple[pd.DataFrame, dict]:
    """Predictions and test.json-style metrics for `folder`/<class>/... images.

    Sub-folders are named after the model's classes unless `class_map` maps folder names
    to classes; other sub-folders are left out and counted. Copies of one picture count
    once; unreadable files are counted with their reasons.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of class sub-folders")
    classes = class_map or {c: c for c in card.classes}
    unknown = set(classes.values()) - set(card.classes)
    if unknown:
        raise ValueError(f"{folder}: maps onto {sorted(unknown)}, not classes of the model")
    src = Source(folder.name, folder, classes)
    index, rejected, report = build_index([src], min_side=1, workers=1)
    unique = unique_pictures(index)
    scored = score_frame(model, card, unique, batch_size)
    metrics = frame_metrics(scored, card, abstain)
    metrics["copies_removed"] = len(index) - len(unique)
    metrics["unreadable"] = len(rejected)
    metrics["left_out"] = {
        f: count_files(folder / f) for f in report["unmapped_folders"].get(folder.name, [])
    }
    return scored.table, metrics
