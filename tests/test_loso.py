"""Leave-one-source-out: the left-out source never teaches; every picture of it is tested."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from facemask.data.split import SPLITS
from facemask.params import stage_params
from facemask.training.loso import held_out_frames, leave_one_source_out, loso_summary
from tests.conftest import SUBDIR, make_dataset, run_data_stages, zip_folder


def frames(sources=("a", "b", "c")) -> dict[str, pd.DataFrame]:
    out = {}
    for k, split in enumerate(SPLITS):
        rows = [
            {"path": f"{s}/{split}/{i}", "source": s, "copies": f"{s}{split}{i // 2}", "label": "x"}
            for s in sources
            for i in range(4 + k)
        ]
        out[split] = pd.DataFrame(rows)
    return out


def test_held_out_source_never_teaches_and_is_tested_whole():
    splits = frames()
    train, valid, test = held_out_frames(splits, "b")
    assert "b" not in set(train["source"]) | set(valid["source"])
    assert set(test["source"]) == {"b"}
    every_b = pd.concat(splits.values()).query("source == 'b'")
    assert len(test) == every_b["copies"].nunique()  # one per copy group, from every split
    others_test = set(splits["test"].query("source != 'b'")["path"])
    assert not others_test & (set(train["path"]) | set(valid["path"]))  # test splits untouched


def test_summary_names_the_worst_source():
    table = pd.DataFrame(
        {"left_out": ["a", "b"], "n": [10, 20], "accuracy": [0.9, 0.7], "errors": [1, 6]}
    )
    s = loso_summary(table)
    assert s["worst_source"] == "b" and s["worst_accuracy"] == 0.7
    assert s["mean_accuracy"] == pytest.approx(0.8)


@pytest.mark.slow
def test_loso_on_two_tiny_sources(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    second = make_dataset(tmp_path / "second", per_class=10, seed=5)
    assert second == tmp_path / "second" / SUBDIR
    spec = dict(params["data"]["sources"][0], name="second")
    spec["url"] = str(zip_folder(tmp_path / "second", tmp_path / "second.zip"))
    params["data"]["sources"].append(spec)
    splits = run_data_stages(params)
    params = stage_params(params, ["seed", "model", "classes", "train"])
    table = leave_one_source_out(
        {s: pd.read_csv(splits / f"{s}.csv") for s in SPLITS}, params, Path("features")
    )
    assert table["left_out"].tolist() == ["second", "tiny"]
    assert table.set_index("left_out")["n"].to_dict() == {"second": 20, "tiny": 32}
    with pytest.raises(ValueError, match="2\\+ sources"):
        one = {s: pd.read_csv(splits / f"{s}.csv").query("source == 'tiny'") for s in SPLITS}
        leave_one_source_out(one, params, Path("features"))
