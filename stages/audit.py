"""Stage audit: out-of-fold label check over every split; the pictures worth a second look.

Each picture is predicted by a linear head (on the cached frozen features of the model in
params.yaml) that never saw it; cleanlab flags labels that head confidently disagrees
with. A person reviews the flagged pictures (plots/label_audit.png) and records each
decision in split.label_reviews. The audit never changes a label itself.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from facemask.config import exit_on_error
from facemask.data.reviews import AUDIT_COLUMNS, load_label_reviews, reviewed_mask
from facemask.explain.figures import plot_notice, plot_review_gallery
from facemask.params import Params, load_stage_params, stage_params

SECTIONS = ("seed", "model", "classes", "train", "split", "audit")


def main(
    params: Mapping | Params, splits: Path, out_csv: Path, metrics_json: Path, gallery: Path
) -> dict:
    """Write the flagged (and reviewed) pictures, audit metrics and a review gallery;
    with `audit.folds: 0`, empty ones that say the audit is off."""
    params = stage_params(params, SECTIONS)
    if params.audit.folds == 0:
        return skipped(out_csv, metrics_json, gallery)
    return audit(params, splits, out_csv, metrics_json, gallery)


def skipped(out_csv: Path, metrics_json: Path, gallery: Path) -> dict:
    """The outputs of a disabled audit: no pictures listed, a gallery that says so."""
    for path in (out_csv, metrics_json, gallery):
        path.parent.mkdir(parents=True, exist_ok=True)
    out_csv.write_text(",".join(AUDIT_COLUMNS) + "\n")
    metrics = {"skipped": "audit.folds is 0: no out-of-fold label check this run"}
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    plot_notice("Label audit off (params audit.folds: 0)", gallery)
    print(metrics["skipped"])
    return metrics


def audit(params: Params, splits: Path, out_csv: Path, metrics_json: Path, gallery: Path) -> dict:
    """The out-of-fold label check (main, with audit.folds >= 2)."""
    # Imported here, not at the top: torch and the backbones take ~9 s to import, which a
    # disabled audit (the fast preset) does not need to pay.
    from facemask.config import cache_dir, seed_everything, tune_malloc
    from facemask.data.cache import decode_frame
    from facemask.models.factory import create_for_training
    from facemask.runtime import use_free_cores
    from facemask.training.audit import (
        find_suspects,
        label_issues,
        out_of_fold_probs,
        split_features,
        summarize_audit,
    )
    from facemask.training.features import feature_sources, use_bf16

    tune_malloc()
    use_free_cores()
    seed_everything(params.seed)
    tp, a, classes = params.train, params.audit, list(params.classes)
    size = tp.image_size
    model, _ = create_for_training(params.model, len(classes), tp)
    # Shared with the train stage through the cache: whichever runs first computes them.
    sources = feature_sources(cache_dir() / "features", model, size)
    df, features, flipped = split_features(
        splits, classes, size, sources, tp.batch_size, a.flip_views, use_bf16(tp.bf16_features)
    )
    probs = out_of_fold_probs(
        df, features, a.folds, classes, tp.head, flipped, tp.class_weights, params.seed
    )
    reviews, _ = load_label_reviews(params.split.label_reviews, df, classes)
    table = label_issues(df, probs, classes, reviewed_mask(df, reviews))
    suspect = find_suspects(table)
    for path in (out_csv, metrics_json, gallery):
        path.parent.mkdir(parents=True, exist_ok=True)
    table[suspect | table["reviewed"]].to_csv(out_csv, index=False, lineterminator="\n")

    todo = table[suspect & ~table["reviewed"]]
    shown = todo.head(a.gallery)
    plot_review_gallery(list(decode_frame(shown, size)), shown, len(todo), gallery)
    metrics = summarize_audit(table, suspect)
    metrics_json.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("splits", type=Path, help="folder with train/valid/test CSVs")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--task", help="a task of params tasks (tasks/dvc.yaml)")
    parser.add_argument("--out", type=Path, default=Path("metrics/label_audit.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/audit.json"))
    parser.add_argument("--gallery", type=Path, default=Path("plots/label_audit.png"))
    args = parser.parse_args()
    with exit_on_error("audit"):
        main(
            load_stage_params(args.params, SECTIONS, args.task),
            args.splits,
            args.out,
            args.metrics,
            args.gallery,
        )
