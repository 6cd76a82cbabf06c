"""Stage explain: what the model looks at (CAMs, occlusion, inside the net), how faithful
the CAMs are (ROAD, confidence change), and galleries of its doubts and mistakes."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facemask.config import load_params, seed_everything, tune_malloc
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
from facemask.models.factory import ModelCard, load_model

LIST_COLUMNS = ["path", "group", "label", "predicted", "confidence"]


@dataclass
class Outputs:
    """Where the stage writes (all on the dvc.yaml cmd line)."""

    plots: Path  # folder of PNGs: they show faces, so DVC-cached
    metrics: Path  # JSON summary
    road: Path  # CSV: ROAD score per method, direction and percentile
    attention: Path  # CSV: lower-face share of CAM / occlusion mass per class
    weights: Path  # CSV: per-layer weight statistics
    low_confidence: Path  # CSV
    misclassified: Path  # CSV


# --------------------------------------------------------------------------- choosing images
def join_split(pred: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Predictions with the split's duplicate group and content hash."""
    keep = test.set_index("path")[["group", "sha256"]]
    out = pred.join(keep, on="path")
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


def describe(row: pd.Series) -> str:
    """Tile caption; two lines, so that long class names fit under a tile."""
    return f"true {row['label']} /\npred {row['predicted']} {row['confidence']:.2f}"


def color_of(row: pd.Series) -> str:
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
) -> None:
    """Rows: each class, correct then wrong; tiles: CAM of the predicted class on the image."""
    tiles, captions, colors, labels = [], [], [], []
    correct = (sample["label"] == sample["predicted"]).to_numpy()
    for c in classes:
        for ok, name in ((True, "correct"), (False, "wrong")):
            where = np.flatnonzero((sample["label"] == c).to_numpy() & (correct == ok))[:per_cell]
            labels.append(f"{c}: {name}")
            for j in range(per_cell):
                if j < len(where):
                    row = sample.iloc[where[j]]
                    tiles.append(overlay(images[where[j]], cams[where[j]]))
                    captions.append(describe(row))
                    colors.append(color_of(row))
                else:
                    tiles.append(None)
                    captions.append("")
                    colors.append("black")
    plot_grid(
        tiles, captions, path, columns=per_cell, title=title, colors=colors, row_labels=labels
    )


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
    p: dict,
    seed: int,
    folder: Path,
) -> tuple[dict, list[dict], list[dict], np.ndarray]:
    """Per CAM method: the grid, ROAD, confidence change and lower-face share.

    Returns metrics per method, ROAD rows, share rows and the first method's CAMs.
    """
    targets = sample["target"].tolist()
    n_road, percentiles = min(p["road_images"], len(sample)), list(p["road_percentiles"])
    metrics, road_table, share_table, first = {}, [], [], None
    for method in p["cam_methods"]:
        cams = compute_cams(model, x, layers, targets, method)
        first = cams if first is None else first
        title = f"{method} at {', '.join(layers)}, for the predicted class"
        plot_cam_grid(
            sample, images, cams, classes, p["per_cell"], folder / f"cam_{method}.png", title
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
    return metrics, road_table, share_table, first


def explain_occlusion(
    model: torch.nn.Module,
    x: torch.Tensor,
    images: np.ndarray,
    sample: pd.DataFrame,
    classes: list[str],
    cams: np.ndarray,
    o: dict,
    method: str,
    path: Path,
) -> tuple[list[dict], int]:
    """Occlusion maps of the first correct and the first wrong images, drawn next to the
    CAM. Returns lower-face share rows (correct ones) and the number of images."""
    correct = (sample["label"] == sample["predicted"]).to_numpy()
    pick = np.concatenate(
        [np.flatnonzero(correct)[: o["images"]], np.flatnonzero(~correct)[: o["wrong"]]]
    )
    size = x.shape[-1]
    patch, stride = max(1, round(o["patch"] * size)), max(1, round(o["stride"] * size))
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
    """First-layer filters and per-layer weight histograms."""
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


def explain_maximize(
    model: torch.nn.Module, card: ModelCard, layer: str, m: dict, seed: int, path: Path
) -> dict:
    """Activation maximisation grid for the layer's first channels; mean activation gain."""
    width = dict(find_spatial_layers(model, card.image_size))[layer][0]
    channels = list(range(min(m["filters"], width)))
    made, (before, after) = maximize_activations(
        model, layer, channels, card.mean, card.std, m["size"], m["steps"], m["lr"], seed
    )
    plot_grid(
        list(made),
        [f"ch {c}: {b:.2f} -> {a:.2f}" for c, b, a in zip(channels, before, after, strict=True)],
        path,
        columns=8,
        title=f"inputs that excite {layer}'s first {len(channels)} channels (mean activation)",
    )
    return {"layer": layer, "before": float(before.mean()), "after": float(after.mean())}


# --------------------------------------------------------------------------- stage
def main(
    params: dict, model_path: Path, predictions_csv: Path, test_csv: Path, outs: Outputs
) -> dict:
    """Write the PNGs under outs.plots and the metrics and lists; return the metrics."""
    tune_malloc()
    p, seed = params["explain"], params["seed"]
    seed_everything(seed)
    clock = time.perf_counter()
    model, card = load_model(model_path)
    pred = join_split(pd.read_csv(predictions_csv), pd.read_csv(test_csv))
    for path in (outs.plots / "x", outs.metrics, outs.road, outs.attention, outs.weights):
        path.parent.mkdir(parents=True, exist_ok=True)

    low = pick_low_confidence(pred, p["low_confidence"])
    wrong = pick_misclassified(pred)
    low[LIST_COLUMNS].to_csv(outs.low_confidence, index=False)
    wrong[LIST_COLUMNS].to_csv(outs.misclassified, index=False)
    sample = pick_cam_sample(pred, card.classes, p["images"], seed)
    sample["target"] = [card.classes.index(c) for c in sample["predicted"]]

    limit = p["gallery_max"]
    shown = [rows.drop_duplicates("group").head(limit) for rows in (low, wrong)]
    needed = pd.concat([sample, *shown]).drop_duplicates("path")
    decoded = decode_frame(needed, card.image_size)
    by_path = dict(zip(needed["path"], decoded, strict=True))
    threshold = p["low_confidence"]
    n_low = plot_gallery(
        low, by_path, outs.plots / "low_confidence.png", f"confidence < {threshold}", limit
    )
    n_wrong = plot_gallery(wrong, by_path, outs.plots / "misclassified.png", "misclassified", limit)

    images = np.stack([by_path[q] for q in sample["path"]]) if len(sample) else decoded[:0]
    x = Normalize(card.mean, card.std)(to_tensor(images))
    layers = cam_layers(p["target_layer"], model, card.image_size)
    per_method, road_table, share_table, cams = explain_cams(
        model, x, images, sample, card.classes, layers, p, seed, outs.plots
    )
    print(f"CAMs and faithfulness: {time.perf_counter() - clock:.1f} s")
    o = p["occlusion"]
    occlusion, n_occluded = explain_occlusion(
        model,
        x,
        images,
        sample,
        card.classes,
        cams,
        o,
        p["cam_methods"][0],
        outs.plots / "occlusion.png",
    )
    print(f"occlusion: {time.perf_counter() - clock:.1f} s")
    stages = find_stage_layers(model, card.image_size)
    f = p["features"]
    k = min(f["images"], len(sample))
    plot_feature_maps(
        model,
        x[:k],
        images[:k],
        sample.iloc[:k],
        f["layers"] or pick_spread(stages, 3),
        f["channels"],
        outs.plots / "feature_maps.png",
    )
    plot_weights(model, p["weight_bins"], outs.plots, card.model)
    pd.DataFrame(summarize_weights(model)).to_csv(outs.weights, index=False)
    m = p["maximize"]
    maximized = explain_maximize(
        model,
        card,
        m["layer"] or stages[len(stages) // 2],
        m,
        seed,
        outs.plots / "activation_max.png",
    )

    metrics = {
        "layer": ", ".join(layers),
        "images": {
            "cam": len(sample),
            "road": min(p["road_images"], len(sample)),
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
    pd.DataFrame(road_table).to_csv(outs.road, index=False)
    pd.DataFrame(share_table + occlusion).round(5).to_csv(outs.attention, index=False)
    metrics = rounded(metrics)
    outs.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {outs.plots}/ and {outs.metrics} in {time.perf_counter() - clock:.1f} s")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("test", type=Path, help="test split CSV (content hashes, groups)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("plots/explain"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/explain.json"))
    parser.add_argument("--road", type=Path, default=Path("metrics/explain_road.csv"))
    parser.add_argument("--attention", type=Path, default=Path("metrics/explain_attention.csv"))
    parser.add_argument("--weights", type=Path, default=Path("metrics/explain_weights.csv"))
    parser.add_argument("--low-confidence", type=Path, default=Path("metrics/low_confidence.csv"))
    parser.add_argument("--misclassified", type=Path, default=Path("metrics/misclassified.csv"))
    args = parser.parse_args()
    outs = Outputs(
        args.out,
        args.metrics,
        args.road,
        args.attention,
        args.weights,
        args.low_confidence,
        args.misclassified,
    )
    main(load_params(args.params), args.model, args.predictions, args.test, outs)
