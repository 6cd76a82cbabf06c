"""The explain and plots stages' reports: which test images to show, the CAM grids,
galleries and maps drawn from them, and the numbers (ROAD, lower-face share) as tables.

Functions take a model, predictions and arrays, draw PNGs into a folder (the pictures are
the point: they show faces) and return numbers; the stages write the CSV and JSON files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import pandas as pd
import torch

from facemask.data.cache import Normalize, decode_frame, to_tensor
from facemask.explain.cams import (
    cam_layers,
    capture_activations,
    compute_cam_mult_change,
    compute_cams,
    compute_lower_share,
    compute_occlusion,
    compute_road,
    compute_weight_histograms,
    filter_tiles,
    find_first_conv,
    find_spatial_layers,
    find_stage_layers,
    maximize_activations,
    overlay,
    pick_spread,
    scale_map,
    summarize_weights,
    top_channels,
)
from facemask.explain.figures import colorize, enlarge, plot_grid, plot_weight_histograms
from facemask.models.factory import ModelCard
from facemask.params import ExplainParams, MaximizeParams, OcclusionParams

LIST_COLUMNS = ["path", "group", "label", "predicted", "confidence"]


# --------------------------------------------------------------------------- choosing images
def join_split(pred: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Predictions with the split's duplicate group and content hash."""
    keep = test.set_index("path")[["group", "sha256"]]
    # The split's own columns win over any the predictions carry along (evaluate adds sha256).
    out = pred.drop(columns=[c for c in keep.columns if c in pred]).join(keep, on="path")
    if out["sha256"].isna().any():
        missing = out.loc[out["sha256"].isna(), "path"].iloc[0]
        raise ValueError(f"{missing} is in the predictions but not in the test split")
    return out


def pick_low_confidence(pred: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Predictions whose top probability is below `threshold`, least sure first."""
    return pred[pred["confidence"] < threshold].sort_values(["confidence", "path"])


def pick_misclassified(pred: pd.DataFrame) -> pd.DataFrame:
    """Wrong predictions, most confident first (the most worrying)."""
    wrong = pred[pred["label"] != pred["predicted"]]
    return wrong.sort_values(["confidence", "path"], ascending=[False, True])


def pick_cam_sample(pred: pd.DataFrame, classes: list[str], n: int, seed: int) -> pd.DataFrame:
    """n images, one per duplicate group: every wrong one (up to n), the rest correct ones
    shared equally among the classes. Correct ones come first, round-robin by class, so
    any prefix of the sample (ROAD, occlusion, feature maps) is balanced; wrong ones last."""
    unique = pred.drop_duplicates("group")
    wrong = pick_misclassified(unique).head(n)
    right = unique[unique["label"] == unique["predicted"]]
    queues, left = [], n - len(wrong)
    for k, c in enumerate(classes):
        rows = right[right["label"] == c]
        queues.append(rows.sample(min(left // (len(classes) - k), len(rows)), random_state=seed))
        left -= len(queues[-1])
    order = [
        q.iloc[[i]] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)
    ]
    return pd.concat([*order, wrong]) if order or len(wrong) else pred.head(0)


def pick_examples(pred: pd.DataFrame, classes: list[str], per_cell: int, seed: int) -> pd.DataFrame:
    """Per true class: a random sample of correct predictions, then the most confident
    wrong ones, up to `per_cell` each (the rows of a CAM grid, in order)."""
    cells = []
    for c in classes:
        rows = pred[pred["label"] == c]
        right = rows[rows["predicted"] == c]
        wrong = rows[rows["predicted"] != c].sort_values("confidence", ascending=False)
        cells += [right.sample(min(per_cell, len(right)), random_state=seed), wrong.head(per_cell)]
    return pd.concat(cells)


def describe(row: pd.Series) -> str:
    """Tile caption; two lines, so that long class names fit under a tile."""
    return f"true {row['label']} /\npred {row['predicted']} {row['confidence']:.2f}"


def describe_prediction(row: pd.Series) -> str:
    """Short tile caption, for grids whose row labels already name the true class."""
    return f"pred {row['predicted']} {row['confidence']:.2f}"


def color_of(row: pd.Series) -> str:
    """Caption colour: green for a correct prediction, red for a wrong one."""
    return "green" if row["label"] == row["predicted"] else "red"


# --------------------------------------------------------------------------- figures
def plot_gallery(rows: pd.DataFrame, images: dict, path: Path, title: str, limit: int) -> int:
    """Tiles of test images (one per duplicate group), captioned; returns how many."""
    shown = rows.drop_duplicates("group").head(limit)
    plot_grid(
        [images[p] for p in shown["path"]],
        [describe(r) for _, r in shown.iterrows()],
        path,
        columns=6,
        title=title if len(shown) else f"{title}: none",
        colors=[color_of(r) for _, r in shown.iterrows()],
    )
    return len(shown)


def plot_cam_grid(
    sample: pd.DataFrame,
    images: np.ndarray,
    cams: np.ndarray,
    classes: list[str],
    per_cell: int,
    path: Path,
    title: str,
    caption: Callable[[pd.Series], str] = describe,
) -> None:
    """Rows: each class, correct then wrong; tiles: the CAM on the image, the first
    `per_cell` of each cell in sample order (the plots and explain stages' grids)."""
    tiles: list[np.ndarray | None] = []
    captions, colors, labels = [], [], []
    correct = (sample["label"] == sample["predicted"]).to_numpy()
    for c in classes:
        for ok, name in ((True, "correct"), (False, "wrong")):
            where = np.flatnonzero((sample["label"] == c).to_numpy() & (correct == ok))[:per_cell]
            labels.append(f"{c}: {name}")
            for j in range(per_cell):
                if j < len(where):
                    row = sample.iloc[where[j]]
                    tiles.append(overlay(images[where[j]], cams[where[j]]))
                    captions.append(caption(row))
                    colors.append(color_of(row))
                else:
                    tiles.append(None)
                    captions.append("")
                    colors.append("black")
    plot_grid(
        tiles, captions, path, columns=per_cell, title=title, colors=colors, row_labels=labels
    )


def plot_feature_maps(
    model: torch.nn.Module,
    x: torch.Tensor,
    images: np.ndarray,
    sample: pd.DataFrame,
    layers: list[str],
    channels: int,
    path: Path,
) -> None:
    """Rows: each image at each layer; tiles: the image, then its most active channels."""
    acts = capture_activations(model, x, layers)
    tiles, captions, labels = [], [], []
    for i in range(len(x)):
        for j, name in enumerate(layers):
            a = acts[name][i]
            picked = top_channels(a, channels)
            tiles.append(images[i] if j == 0 else None)
            captions.append(describe(sample.iloc[i]) if j == 0 else "")
            labels.append(f"{name} ({a.shape[1]} px)")
            tiles += [enlarge(colorize(a[c].numpy()), 64) for c in picked]
            tiles += [None] * (channels - len(picked))
            captions += [f"channel {c}" for c in picked] + [""] * (channels - len(picked))
    plot_grid(
        tiles,
        captions,
        path,
        columns=1 + channels,
        row_labels=labels,
        title="most active channels of each layer",
    )


def plot_weights(model: torch.nn.Module, bins: int, folder: Path, name: str) -> None:
    """First-layer filters (filters.png) and per-layer weight histograms (weights.png)."""
    conv_name, conv = find_first_conv(model)
    kernels = filter_tiles(conv)
    plot_grid(
        [enlarge(t, 32) for t in kernels],
        [str(i) for i in range(len(kernels))],
        folder / "filters.png",
        columns=8,
        title=f"first-layer filters: {conv_name} ({conv.kernel_size[0]} px)",
    )
    names, edges, fractions = compute_weight_histograms(model, bins)
    plot_weight_histograms(names, edges, fractions, folder / "weights.png", f"{name}: weights")


# --------------------------------------------------------------------------- numbers
def share_by_class(
    sample: pd.DataFrame, classes: list[str], shares: np.ndarray, name: str
) -> list[dict]:
    """Mean lower-half share per true class and overall, on correct predictions only."""
    ok = (sample["label"] == sample["predicted"]).to_numpy() & ~np.isnan(shares)
    rows = []
    for c in [*classes, "all"]:
        keep = ok & ((sample["label"] == c).to_numpy() if c != "all" else True)
        value = float(shares[keep].mean()) if keep.any() else float("nan")
        rows.append(
            {
                "map": name,
                "class": c,
                "n": int(keep.sum()),
                "lower_share": value,
                "label": f"{name}: {c}",
            }
        )
    return rows


def road_rows(method: str, percentiles: list[int], road: dict) -> list[dict]:
    """Long table: one row per direction and percentile, labelled for a bar chart."""
    rows = []
    for direction, key in (("MoRF", "morf"), ("LeRF", "lerf")):
        for p, scores in zip(percentiles, road[key], strict=True):
            rows.append(
                {
                    "method": method,
                    "direction": direction,
                    "percent_removed": 100 - p,
                    "score": round(float(scores.mean()), 5),
                    "label": f"{method} {direction} {100 - p}% removed",
                }
            )
    return rows


@overload
def rounded(value: dict) -> dict: ...
@overload
def rounded(value: object) -> object: ...
def rounded(value: object) -> object:
    """Floats rounded for stable, readable JSON; NaN as null."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 5)
    return value


# --------------------------------------------------------------------------- sections
def explain_cams(
    model: torch.nn.Module,
    x: torch.Tensor,
    images: np.ndarray,
    sample: pd.DataFrame,
    classes: list[str],
    layers: list[str],
    p: ExplainParams,
    seed: int,
    folder: Path,
) -> tuple[dict, list[dict], list[dict], np.ndarray]:
    """Per CAM method: the grid, ROAD, confidence change and lower-face share.

    Returns metrics per method, ROAD rows, share rows and the first method's CAMs.
    """
    targets = sample["target"].tolist()
    n_road, percentiles = min(p.road_images, len(sample)), list(p.road_percentiles)
    metrics, road_table, share_table, first = {}, [], [], None
    for method in p.cam_methods:
        cams = compute_cams(model, x, layers, targets, method)
        first = cams if first is None else first
        title = f"{method} at {', '.join(layers)}, for the predicted class"
        plot_cam_grid(
            sample, images, cams, classes, p.per_cell, folder / f"cam_{method}.png", title
        )
        shares = share_by_class(sample, classes, compute_lower_share(cams), method)
        road = compute_road(model, x[:n_road], cams[:n_road], targets[:n_road], percentiles, seed)
        road_table += road_rows(method, percentiles, road)
        share_table += shares
        metrics[method] = {
            # ROAD: morf more negative, lerf nearer 0, combined higher = more faithful.
            "road_morf": float(road["morf"].mean()),
            "road_lerf": float(road["lerf"].mean()),
            "road_combined": float(road["combined"].mean()),
            # Probability change keeping only the CAM's part of the image; nearer 0 = better.
            "cam_mult_change": float(compute_cam_mult_change(model, x, cams, targets).mean()),
            "lower_face_share": {r["class"]: r["lower_share"] for r in shares},
        }
    assert first is not None  # params: cam_methods has at least one method
    return metrics, road_table, share_table, first


def explain_occlusion(
    model: torch.nn.Module,
    x: torch.Tensor,
    images: np.ndarray,
    sample: pd.DataFrame,
    classes: list[str],
    cams: np.ndarray,
    o: OcclusionParams,
    method: str,
    path: Path,
) -> tuple[list[dict], int]:
    """Occlusion maps of the first correct and the first wrong images, drawn next to the
    CAM. Returns lower-face share rows (correct ones) and the number of images."""
    correct = (sample["label"] == sample["predicted"]).to_numpy()
    pick = np.concatenate(
        [np.flatnonzero(correct)[: o.images], np.flatnonzero(~correct)[: o.wrong]]
    )
    size = x.shape[-1]
    patch, stride = max(1, round(o.patch * size)), max(1, round(o.stride * size))
    targets = sample["target"].to_numpy()[pick].tolist()
    occ = compute_occlusion(model, x[pick], targets, patch, stride)
    tiles, captions = [], []
    for m, i in zip(occ, pick, strict=True):
        tiles += [images[i], overlay(images[i], cams[i]), overlay(images[i], scale_map(m))]
        captions += [describe(sample.iloc[i]), method, f"occlusion, max drop {m.max():.2f}"]
    title = f"occlusion: drop in p(predicted) under a {patch} px grey patch, stride {stride} px"
    plot_grid(tiles, captions, path, columns=3, title=title)
    shares = share_by_class(sample.iloc[pick], classes, compute_lower_share(occ), "occlusion")
    return shares, len(pick)


def explain_maximize(
    model: torch.nn.Module, card: ModelCard, layer: str, m: MaximizeParams, seed: int, path: Path
) -> dict:
    """Activation maximisation grid for the layer's first channels; mean activation gain."""
    width = dict(find_spatial_layers(model, card.image_size))[layer][0]
    channels = list(range(min(m.filters, width)))
    made, (before, after) = maximize_activations(
        model, layer, channels, card.mean, card.std, m.size, m.steps, m.lr, seed
    )
    plot_grid(
        list(made),
        [f"ch {c}: {b:.2f} -> {a:.2f}" for c, b, a in zip(channels, before, after, strict=True)],
        path,
        columns=8,
        title=f"inputs that excite {layer}'s first {len(channels)} channels (mean activation)",
    )
    return {"layer": layer, "before": float(before.mean()), "after": float(after.mean())}


# --------------------------------------------------------------------------- the report
@dataclass
class Explanation:
    """What explain_model found, as the explain stage writes it."""

    metrics: dict  # JSON summary, floats rounded
    low_confidence: pd.DataFrame  # LIST_COLUMNS, least sure first
    misclassified: pd.DataFrame  # LIST_COLUMNS, most confident first
    road: pd.DataFrame  # ROAD score per method, direction and percentile
    attention: pd.DataFrame  # lower-face share of CAM / occlusion mass per class
    weights: pd.DataFrame  # per-layer weight statistics


def explain_model(
    model: torch.nn.Module, card: ModelCard, pred: pd.DataFrame, p: ExplainParams, seed: int,
    folder: Path,
) -> Explanation:  # fmt: skip
    """Every explain section on the test predictions (`join_split` output); PNGs in `folder`.

    `p` is params.yaml's `explain` section.
    """
    clock = time.perf_counter()
    low = pick_low_confidence(pred, p.low_confidence)
    wrong = pick_misclassified(pred)
    sample = pick_cam_sample(pred, card.classes, p.images, seed)
    sample["target"] = [card.classes.index(c) for c in sample["predicted"]]

    # Decode each picture once: the CAM sample and both galleries share many.
    limit = p.gallery_max
    shown = [rows.drop_duplicates("group").head(limit) for rows in (low, wrong)]
    needed = pd.concat([sample, *shown]).drop_duplicates("path")
    decoded = decode_frame(needed, card.image_size)
    by_path = dict(zip(needed["path"], decoded, strict=True))
    title = f"confidence < {p.low_confidence}"
    n_low = plot_gallery(low, by_path, folder / "low_confidence.png", title, limit)
    n_wrong = plot_gallery(wrong, by_path, folder / "misclassified.png", "misclassified", limit)

    images = np.stack([by_path[q] for q in sample["path"]]) if len(sample) else decoded[:0]
    x = Normalize(card.mean, card.std)(to_tensor(images))
    layers = cam_layers(p.target_layer, model, card.image_size)
    per_method, road_table, share_table, cams = explain_cams(
        model, x, images, sample, card.classes, layers, p, seed, folder
    )
    print(f"CAMs and faithfulness: {time.perf_counter() - clock:.1f} s")
    occlusion, n_occluded = explain_occlusion(
        model,
        x,
        images,
        sample,
        card.classes,
        cams,
        p.occlusion,
        p.cam_methods[0],
        folder / "occlusion.png",
    )
    print(f"occlusion: {time.perf_counter() - clock:.1f} s")
    stages = find_stage_layers(model, card.image_size)
    f = p.features
    k = min(f.images, len(sample))
    layers_shown = f.layers or pick_spread(stages, 3)
    feature_png = folder / "feature_maps.png"
    plot_feature_maps(
        model, x[:k], images[:k], sample.iloc[:k], layers_shown, f.channels, feature_png
    )
    plot_weights(model, p.weight_bins, folder, card.model)
    weights = pd.DataFrame(summarize_weights(model))
    m = p.maximize
    layer = m.layer or stages[len(stages) // 2]
    maximized = explain_maximize(model, card, layer, m, seed, folder / "activation_max.png")

    metrics = {
        "layer": ", ".join(layers),
        "images": {
            "cam": len(sample),
            "road": min(p.road_images, len(sample)),
            "occlusion": n_occluded,
            "gallery_low_confidence": n_low,
            "gallery_misclassified": n_wrong,
        },
        "low_confidence": len(low),
        "misclassified": len(wrong),
        **per_method,
        "occlusion": {"lower_face_share": {r["class"]: r["lower_share"] for r in occlusion}},
        "activation_max": maximized,
    }
    return Explanation(
        rounded(metrics),
        low[LIST_COLUMNS],
        wrong[LIST_COLUMNS],
        pd.DataFrame(road_table),
        pd.DataFrame(share_table + occlusion).round(5),
        weights,
    )
