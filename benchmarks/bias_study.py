"""The bias preset end to end in a scratch folder: mask types on mask-types-demographics,
its own group-aware split, then the slice table by gender, race and gender x race on its
test split. Prints the table the README quotes (metrics/slices.csv rows of those families).

    python benchmarks/bias_study.py        # needs FACEMASK_MIRROR (or the web)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from facemask.params import compose
    from stages import evaluate, slices, train
    from tests.conftest import run_data_stages

    with tempfile.TemporaryDirectory(prefix="bias-") as tmp:
        compose(["task=bias"], Path(tmp) / "params.yaml", ROOT / "conf")
        params = yaml.safe_load((Path(tmp) / "params.yaml").read_text())
        os.chdir(tmp)
        run_data_stages(params)
        model = Path("models/model.safetensors")
        train.main(params, Path("data/splits"), model, Path("h.csv"), Path("train.json"))
        test = evaluate.main(
            params, model, Path("data/splits/test.csv"), Path("data/splits/test_published.csv"),
            Path("metrics/test.json"), Path("metrics/predictions.csv"), Path("metrics/curves"),
        )  # fmt: skip
        Path("metrics/external_predictions").mkdir()
        slices.main(
            params, Path("metrics/predictions.csv"), Path("metrics/external_predictions"),
            Path("metrics/slices.csv"), Path("metrics/slices.json"), Path("slices.png"),
        )  # fmt: skip
        table = pd.read_csv("metrics/slices.csv")
        keep = table["family"].str.startswith("attr_")
        print(f"test split: {test['n']} pictures, accuracy {test['accuracy']:.4f}")
        cols = ["family", "slice", "n", "accuracy", "acc_lo", "acc_hi", "small"]
        print(table.loc[keep, cols].to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
