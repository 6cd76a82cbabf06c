"""README result tables come from the metrics files, and the README is in sync with them."""

from __future__ import annotations

import json

import pytest

from facemask.results import MARK, render
from tests.conftest import ROOT


def write_metrics(root, accuracy=0.99):
    m = root / "metrics"
    (m / "external").mkdir(parents=True)
    test = {
        "accuracy": accuracy,
        "n": 100,
        "errors": round(100 * (1 - accuracy)),
        "reviewed_labels": {"accuracy": 1.0, "n": 99, "errors": 0, "dropped": 1, "relabelled": 0},
        "calibration": {"ece_before": 0.05, "ece_after": 0.01, "temperature": 1.7},
        "per_source": {
            "archive": {"accuracy": 1.0, "n": 60, "errors": 0},
            "street": {"accuracy": 0.975, "n": 40, "errors": 1},
        },
    }
    (m / "test.json").write_text(json.dumps(test))
    ext = {"accuracy": 0.9, "n": 50, "errors": 5, "overlap_removed": 3}
    (m / "external" / "crowd.json").write_text(json.dumps(ext))
    slices = {
        "face_size": {"worst_slice": "<32", "worst_accuracy": 0.8, "worst_n": 40, "gap": 0.19}
    }
    (m / "slices.json").write_text(json.dumps(slices))


def test_table_carries_the_numbers_the_pipeline_wrote(tmp_path):
    write_metrics(tmp_path)
    readme = "intro\n<!-- results:evaluation -->\nold\n<!-- /results:evaluation -->\nend\n"
    out = render(readme, tmp_path)
    assert "old" not in out and out.startswith("intro\n") and out.endswith("end\n")
    assert "| held-in test, published labels | 100 | 99.00 % | 1 |" in out
    assert "| external: crowd | 50 | 90.00 % | 5 | external; 3 copies" in out
    assert "| held-in test: street | 40 | 97.50 % | 1 | a training source's own" in out
    assert "worst slice, face_size: <32 | 40 | 80.00 %" in out
    assert "ECE 0.0500 raw -> 0.0100 at T = 1.7" in out
    write_metrics(tmp_path / "other", accuracy=0.95)
    assert render(readme, tmp_path / "other") != out  # a changed metric changes the README


def test_unknown_table_name_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nonesuch"):
        render("<!-- results:nonesuch -->\nx\n<!-- /results:nonesuch -->", tmp_path)


def test_readme_tables_are_in_sync_with_the_metrics():
    readme = (ROOT / "README.md").read_text()
    assert len(MARK.findall(readme)) >= 2  # the tables are marked, so the check has teeth
    assert render(readme, ROOT) == readme, "README result tables are stale: run `make results`"


def test_headline_keys_are_short_and_unique(tmp_path):
    from facemask.results import headline

    write_metrics(tmp_path)
    h = headline(tmp_path)
    assert h == {
        "held_in": 0.99,
        "held_in_reviewed": 1.0,
        "ece": 0.01,
        "ext_crowd": 0.9,
        "worst_face_size": 0.8,
    }


def test_loso_table_lists_each_left_out_source_then_mean_and_worst(tmp_path):
    from facemask.results import loso_table

    assert "No leaderboard/loso" in loso_table(tmp_path)
    (tmp_path / "leaderboard" / "loso").mkdir(parents=True)
    summary = {
        "mean_accuracy": 0.95,
        "worst_accuracy": 0.92,
        "worst_source": "crowd",
        "per_source": {
            "crowd": {"n": 100, "accuracy": 0.92, "errors": 8},
            "portraits": {"n": 50, "accuracy": 0.98, "errors": 1},
        },
    }
    (tmp_path / "leaderboard" / "loso" / "loso.json").write_text(json.dumps(summary))
    lines = loso_table(tmp_path).splitlines()
    assert lines[2:] == [
        "| crowd | 100 | 92.00 % | 8 |",
        "| portraits | 50 | 98.00 % | 1 |",
        "| mean over sources | - | 95.00 % | - |",
        "| worst: crowd | - | 92.00 % | - |",
    ]


def test_scene_sets_table_has_a_row_per_scored_scene_set(tmp_path):
    def scenes_json(path, far, recall):
        by = {"iou_0.3": far, "iou_0.5": far / 2}
        doc = {
            "scenes": 10,
            "detection": {"recall": recall},
            "map50": {"mean": 0.5},
            "found_and_right": {
                k: {
                    "faces": 40,
                    "found_and_right": v,
                    "16px_up": v + 0.01,
                    "false_boxes_per_scene": 1.25,
                }
                for k, v in by.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))

    readme = "<!-- results:scene-sets -->\n<!-- /results:scene-sets -->"
    assert "No scenes metrics" in render(readme, tmp_path)
    scenes_json(tmp_path / "metrics" / "scenes.json", 0.8, 0.9)
    scenes_json(tmp_path / "metrics" / "scenes" / "street.json", 0.6, 0.7)
    out = render(readme, tmp_path)
    assert (
        "| andrewmvd test scenes (held-in) | 10 | 40 | 80.0 % / 40.0 % | 81.0 % | 90.0 % |" in out
    )
    assert (
        "| street (external) | 10 | 40 | 60.0 % / 30.0 % | 61.0 % | 70.0 % | 1.25 | 0.500 |" in out
    )
