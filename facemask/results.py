"""The result tables of README.md and docs/*.md, generated from the files the pipeline wrote.

Each table sits in a page between `<!-- results:NAME -->` and `<!-- /results:NAME -->`;
`python -m facemask.results` rewrites them in README.md and every docs/*.md, `--check` fails
naming each page that is out of date (CI runs the check, so a hand-edited number or a stale
table cannot land).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

FAMILIES = ("face_size", "source", "brightness", "blur", "colour")


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def evaluation_table(root: Path) -> str:
    """Held-in test (published labels, reviewed beside), each external set, worst slice per
    family, calibration and corruption accuracy: one row each."""
    m = root / "metrics"
    test = _read(m / "test.json")
    if test is None:
        return "_No metrics/test.json yet: run `dvc repro`._"
    rows = [("what", "pictures", "accuracy", "errors", "note")]
    rows.append(
        ("held-in test, published labels", test["n"], _pct(test["accuracy"]), test["errors"],
         "the headline: what the source's labels say")
    )  # fmt: skip
    rev = test.get("reviewed_labels")
    if rev:
        rows.append(
            ("held-in test, reviewed labels", rev["n"], _pct(rev["accuracy"]), rev["errors"],
             f"{rev['dropped']} dropped, {rev['relabelled']} relabelled by review")
        )  # fmt: skip
    for name, s in (test.get("per_source") or {}).items():
        rows.append(
            (f"held-in test: {name}", s["n"], _pct(s["accuracy"]), s["errors"],
             "a training source's own test pictures (not external)")
        )  # fmt: skip
    for f in sorted((m / "external").glob("*.json")):
        e = json.loads(f.read_text())
        note = f"external; {e.get('overlap_removed', 0)} copies of train/valid pictures removed"
        rows.append((f"external: {f.stem}", e["n"], _pct(e["accuracy"]), e["errors"], note))
    slices = _read(m / "slices.json") or {}
    for fam in [f for f in FAMILIES if f in slices] + sorted(set(slices) - set(FAMILIES)):
        s = slices[fam]
        if s.get("worst_slice") is None:
            continue
        gap = "" if s.get("gap") is None else f"gap to best {100 * s['gap']:.1f} points"
        rows.append(
            (f"worst slice, {fam}: {s['worst_slice']}", s["worst_n"], _pct(s["worst_accuracy"]),
             "-", gap)
        )  # fmt: skip
    cal = test.get("calibration")
    if cal:
        rows.append(
            ("calibration (test, ECE 15 bins)", test["n"], "-", "-",
             f"ECE {cal['ece_before']:.4f} raw -> {cal['ece_after']:.4f} at T = "
             f"{cal['temperature']:.3g}")
        )  # fmt: skip
    ab = test.get("abstain")
    if ab:
        rows.append(
            (f"answered at confidence >= {ab['threshold']}", ab["answered"],
             _pct(ab["accuracy_answered"]), "-", f"coverage {_pct(ab['coverage'], 1)}")
        )  # fmt: skip
    rob = _read(m / "robustness.json")
    if rob:
        w = rob["worst"]
        rows.append(
            ("corruptions, mean over all", rob["sample"], _pct(rob["mean_corrupted_accuracy"]),
             "-", f"clean {_pct(rob['clean_accuracy'])}; worst {w['corruption']} "
             f"{w['severity']}: {_pct(w['accuracy'])}")
        )  # fmt: skip
    return _markdown(rows)


TASKS = {"binary (default)": "metrics", "three_class": "metrics/three_class"}


def tasks_table(root: Path) -> str:
    """One line per task pipeline (dvc.yaml, three_class/dvc.yaml): its own test split's
    accuracy, macro F1 and per-class F1, and its scenes' per-class AP where it has them."""
    rows = [("task", "test pictures", "accuracy", "macro F1", "F1 per class", "scenes AP@0.5")]
    for task, folder in TASKS.items():
        test = _read(root / folder / "test.json")
        if test is None:
            rows.append((task, "-", "-", "-", f"_no {folder}/test.json yet_", "-"))
            continue
        f1 = ", ".join(f"{c} {v['f1']:.3f}" for c, v in test["per_class"].items())
        scenes = _read(root / folder / "scenes.json")
        ap = "-"
        if scenes:
            ap = ", ".join(
                f"{c} {v:.3f}" for c, v in scenes["map50"]["per_class"].items() if v is not None
            )
        rows.append((task, test["n"], _pct(test["accuracy"]), f"{test['macro']['f1']:.3f}", f1, ap))
    return _markdown(rows)


def serving_table(root: Path) -> str:
    """The scenes and export stages' figures (serving/dvc.yaml): detection, matched-face
    accuracy, mAP@0.5, export parity and ONNX Runtime speed."""
    sc, ex = _read(root / "metrics" / "scenes.json"), _read(root / "metrics" / "export.json")
    if sc is None and ex is None:
        return "_No metrics/scenes.json or metrics/export.json yet: run `make serving`._"
    rows = [("what", "figure")]
    if sc:
        det, cls = sc["detection"], sc["classification"]
        per = det["per_class"]
        rows.append(
            (f"detection recall, faces >= 32 px ({' / '.join(per)})",
             " / ".join(_pct(v["recall_32px_up"], 1) for v in per.values()))
        )  # fmt: skip
        rows.append(
            (f"detection recall, all {det['faces']} labelled faces", _pct(det["recall"], 1))
        )
        accs = ", ".join(f"{k} {_pct(v['accuracy'], 1)}" for k, v in cls["per_class"].items())
        matched = f"mask accuracy on matched faces ({cls['faces']})"
        rows.append((matched, f"{_pct(cls['accuracy'], 1)}: {accs}"))
        rows.append(
            (f"mAP@0.5 {' / '.join(sc['map50']['per_class'])}",
             " / ".join(f"{v:.3f}" for v in sc["map50"]["per_class"].values()))
        )  # fmt: skip
        rows.append(
            ("detector + classifier, per scene (stage, all scenes)", f"{sc['ms_per_scene']} ms")
        )
    if ex:
        diff = ex["parity"]["max_probability_difference"]
        rows.append(
            ("export parity, max probability difference (" + " / ".join(diff) + ")",
             " / ".join(f"{v:.1e}" for v in diff.values()))
        )  # fmt: skip
        ort = ex["onnxruntime"]
        for key in [k for k in ort if k.startswith("batch_")]:
            b = ort[key]
            rows.append(
                (f"ONNX Runtime, batch {b['batch_size']} ({ex['image_size']} px)",
                 f"{b['median_ms']} ms median, {b['images_per_s']} images/s")
            )  # fmt: skip
        if ex.get("int8"):
            q = ex["int8"]
            rows.append(
                ("int8 (dynamic) ONNX: accuracy, size, batch 1",
                 f"{_pct(q['accuracy'])} (fp32 {_pct(ex['accuracy']['onnx'])}), {q['size_mb']} MB"
                 f" (fp32 {ex['size_mb']['onnx']}), {q['batch_1']['median_ms']} ms")
            )  # fmt: skip
    return _markdown(rows)


def _markdown(rows: list[tuple]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in body]
    return "\n".join(lines)


def slices_table(root: Path, family: str) -> str:
    """Every slice of one family from metrics/slices.csv, with its interval."""
    path = root / "metrics" / "slices.csv"
    if not path.is_file():
        return "_No metrics/slices.csv yet._"
    t = pd.read_csv(path)
    t = t[t["family"] == family]
    rows = [("slice", "n", "accuracy", "95 % interval", "")]
    for r in t.itertuples():
        flag = "too few to rank" if r.small else ""
        rows.append(
            (r.slice, r.n, _pct(r.accuracy, 1), f"{_pct(r.acc_lo, 1)} - {_pct(r.acc_hi, 1)}", flag)
        )
    return _markdown(rows)


def leaderboard_table(root: Path, name: str) -> str:
    path = (
        root / "leaderboard" / name / "leaderboard.md"
        if name
        else root / "leaderboard" / "leaderboard.md"
    )
    return path.read_text().strip() if path.is_file() else "_No leaderboard yet._"


def loso_table(root: Path) -> str:
    """Leave-one-source-out (compare/dvc.yaml:loso): one row per left-out source, then the
    mean and the worst."""
    d = _read(root / "leaderboard" / "loso" / "loso.json")
    if d is None:
        return "_No leaderboard/loso/loso.json yet: run `dvc repro compare/dvc.yaml:loso`._"
    rows = [("left out (tested on)", "pictures", "accuracy", "errors")]
    for name, r in d["per_source"].items():
        rows.append((name, r["n"], _pct(r["accuracy"]), r["errors"]))
    rows.append(("mean over sources", "-", _pct(d["mean_accuracy"]), "-"))
    rows.append((f"worst: {d['worst_source']}", "-", _pct(d["worst_accuracy"]), "-"))
    return _markdown(rows)


def scene_sets_table(root: Path) -> str:
    """One row per scene source the scenes stages scored: the andrewmvd test scenes
    (metrics/scenes.json, held-in) and each external set (metrics/scenes/<name>.json), through
    the default finder; then each again through YuNet with the no-face re-scorer
    (metrics/detect/scenes/<name>.json), with the
    detector the pipeline trains (metrics/detect/trained/<name>.json), with both fused
    (metrics/detect/fused/<name>.json), and fused with YuNet's boxes refined first
    (metrics/detect/refined/<name>.json)."""
    m = root / "metrics"
    found = [("andrewmvd test scenes (held-in)", m / "scenes.json")]
    found += [(f"{f.stem} (external)", f) for f in sorted((m / "scenes").glob("*.json"))]
    # The same sets through each detection candidate (detect/dvc.yaml), in the same order.
    keys = ["andrewmvd"] + [Path(p).stem for _, p in found[1:]]  # metrics/scenes.json: andrewmvd
    base = list(found)
    for folder, suffix in (("scenes", ", YuNet + no-face re-scorer"),
                           ("trained", ", trained detector"),
                           ("fused", ", YuNet + trained detector fused"),
                           ("refined", ", YuNet refined + trained detector fused")):  # fmt: skip
        files = {f.stem: f for f in (m / "detect" / folder).glob("*.json")}
        found += [(f"{name}{suffix}", files[k])
                  for (name, _), k in zip(base, keys, strict=True) if k in files]  # fmt: skip
    rows = [("scene set", "scenes", "faces", "found and right, IoU 0.3 / 0.5", ">= 16 px, IoU 0.3",
             "recall, IoU 0.5", "false boxes / scene", "mAP@0.5 mean")]  # fmt: skip
    for name, path in found:
        sc = _read(path)
        if not sc or "found_and_right" not in sc:
            continue
        loose, strict = sc["found_and_right"]["iou_0.3"], sc["found_and_right"]["iou_0.5"]
        rows.append(
            (name, str(sc["scenes"]), str(loose["faces"]),
             f"{_pct(loose['found_and_right'], 1)} / {_pct(strict['found_and_right'], 1)}",
             _pct(loose.get("16px_up"), 1), _pct(sc["detection"]["recall"], 1),
             f"{loose['false_boxes_per_scene']:.2f}",
             f"{sc['map50']['mean']:.3f}")
        )  # fmt: skip
    if len(rows) == 1:
        return "_No scenes metrics with found-and-right yet: run `make serving`._"
    return _markdown(rows)


def benchmark_table(root: Path, name: str) -> str:
    """A benchmark's recorded output (benchmarks/results/<name>.md), as the benchmark wrote it."""
    path = root / "benchmarks" / "results" / f"{name}.md"
    return path.read_text().strip() if path.is_file() else f"_No {path.name} yet._"


TABLES: dict[str, Callable[[Path], str]] = {
    "repro-time": lambda r: benchmark_table(r, "repro_time"),
    "inference-speed": lambda r: benchmark_table(r, "inference_speed"),
    "dedup-scale": lambda r: benchmark_table(r, "dedup_scale"),
    "serving": serving_table,
    "scene-sets": scene_sets_table,
    "evaluation": evaluation_table,
    "tasks": tasks_table,
    "slices-face-size": lambda r: slices_table(r, "face_size"),
    "leaderboard": lambda r: leaderboard_table(r, ""),
    "leaderboard-joined": lambda r: leaderboard_table(r, "joined"),
    "loso": loso_table,
}
MARK = re.compile(
    r"<!-- results:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /results:(?P=name) -->", re.S
)


def render(readme: str, root: Path, source: str = "README") -> str:
    """The page with every marked table regenerated from `root`; an unknown name is an error
    naming `source` (the page)."""

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise ValueError(f"{source}: unknown results table {name!r} (known: {sorted(TABLES)})")
        return f"<!-- results:{name} -->\n{TABLES[name](root)}\n<!-- /results:{name} -->"

    return MARK.sub(fill, readme)


def pages(root: Path) -> list[Path]:
    """The pages that may hold result tables: README.md and every docs/*.md under `root`."""
    readme = [root / "README.md"] if (root / "README.md").is_file() else []
    return readme + sorted((root / "docs").glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "pages", nargs="*", type=Path, help="pages to do (default: README.md and docs/*.md)"
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="where metrics/ lives")
    parser.add_argument("--readme", type=Path, help="one page only; its folder is the root")
    parser.add_argument("--check", action="store_true", help="exit 1 if any page is stale")
    args = parser.parse_args(argv)
    if args.readme is not None:
        root, todo = args.readme.resolve().parent, [args.readme]
    else:
        root, todo = args.root, args.pages or pages(args.root)
    new: dict[Path, tuple[str, str]] = {}
    try:
        for page in todo:
            text = page.read_text()
            new[page] = (text, render(text, root, source=str(page)))
    except (OSError, ValueError) as e:
        print(f"facemask.results: {e}", file=sys.stderr)
        return 2
    stale = [page for page, (old, text) in new.items() if text != old]
    if args.check:
        for page in stale:
            print(f"{page}: result tables are stale: run `make results`", file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        page.write_text(new[page][1])
    return 0


def headline(root: Path) -> dict:
    """The few numbers a reviewer compares, under short unique keys (metrics/summary.json), so
    `dvc exp show` and `dvc metrics diff` can show them side by side in 120 columns. Only
    the default product's files (dvc.yaml's summary lists them): the evaluations of
    evaluations/dvc.yaml, built apart, show their own metrics files."""
    m = root / "metrics"
    out: dict = {}
    test = _read(m / "test.json")
    if test:
        out["held_in"] = round(test["accuracy"], 4)
        if test.get("reviewed_labels"):
            out["held_in_reviewed"] = round(test["reviewed_labels"]["accuracy"], 4)
        if test.get("calibration"):
            out["ece"] = round(test["calibration"]["ece_after"], 4)
    for f in sorted((m / "external").glob("*.json")):
        out[f"ext_{f.stem}"] = round(json.loads(f.read_text())["accuracy"], 4)
    face = (_read(m / "slices.json") or {}).get("face_size") or {}
    if face.get("worst_accuracy") is not None:
        out["worst_face_size"] = round(face["worst_accuracy"], 4)
    return out


if __name__ == "__main__":
    sys.exit(main())
