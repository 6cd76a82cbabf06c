"""Result tables in README.md and docs/*.md come from the metrics files, and every page is in
sync with them."""

from __future__ import annotations

import json

import pytest

from facemask.results import MARK, TABLES, main, pages, render
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


def test_docs_tables_are_in_sync_with_the_metrics():
    docs = [p for p in pages(ROOT) if p.parent.name == "docs" and MARK.search(p.read_text())]
    assert docs, "no docs page holds a results table"  # so the loop below checks something
    for page in docs:
        text = page.read_text()
        assert render(text, ROOT, str(page)) == text, f"{page} is stale: run `make results`"


def test_every_table_sits_in_the_readme_or_a_docs_page():
    """A table moved out of the README must land in a page the check reads, not vanish."""
    placed = {m.group("name") for p in pages(ROOT) for m in MARK.finditer(p.read_text())}
    assert placed == set(TABLES)


def site(root):
    """A repository in miniature: metrics, a README with a fresh table, a stale docs page."""
    write_metrics(root)
    fresh = render("<!-- results:evaluation -->\n<!-- /results:evaluation -->\n", root)
    (root / "README.md").write_text("# readme\n" + fresh)
    (root / "docs").mkdir()
    stale = "<!-- results:loso -->\nold\n<!-- /results:loso -->"
    (root / "docs" / "page.md").write_text(f"# page\n{stale}\nend\n")
    return fresh


def test_check_fails_naming_a_stale_docs_page_and_rewrite_fixes_it(tmp_path, capsys):
    fresh = site(tmp_path)
    page = tmp_path / "docs" / "page.md"
    assert main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "page.md" in err and "README" not in err  # only the stale page is named
    assert main(["--root", str(tmp_path)]) == 0
    text = page.read_text()
    assert "old" not in text and "No leaderboard/loso" in text and text.endswith("end\n")
    assert (tmp_path / "README.md").read_text() == "# readme\n" + fresh  # untouched
    assert main(["--root", str(tmp_path), "--check"]) == 0


def test_check_reads_docs_from_the_current_folder_by_default(tmp_path, monkeypatch, capsys):
    """`make lint` runs `python -m facemask.results --check` in the repository root."""
    site(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["--check"]) == 1
    assert "docs/page.md" in capsys.readouterr().err
    assert main([]) == 0
    assert main(["--check"]) == 0


def test_readme_option_checks_that_page_only(tmp_path):
    site(tmp_path)  # docs/page.md is stale, README.md is not
    assert main(["--readme", str(tmp_path / "README.md"), "--check"]) == 0
    assert main(["--check", "--root", str(tmp_path), str(tmp_path / "docs" / "page.md")]) == 1


def test_unknown_table_in_a_docs_page_names_the_page_and_writes_nothing(tmp_path, capsys):
    site(tmp_path)
    bad = tmp_path / "docs" / "zz.md"
    bad.write_text("<!-- results:nonesuch -->\nx\n<!-- /results:nonesuch -->\n")
    stale = (tmp_path / "docs" / "page.md").read_text()
    assert main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "zz.md" in err and "nonesuch" in err
    assert (tmp_path / "docs" / "page.md").read_text() == stale  # no page half-written
    with pytest.raises(ValueError, match=r"docs/zz\.md"):
        render(bad.read_text(), tmp_path, "docs/zz.md")


def test_headline_keys_are_short_and_unique(tmp_path):
    from facemask.results import headline

    write_metrics(tmp_path)
    # Not a file stage summary lists (evaluations/dvc.yaml writes it): left out.
    rob = {"sample": 10, "clean_accuracy": 1.0, "mean_corrupted_accuracy": 0.9}
    (tmp_path / "metrics" / "robustness.json").write_text(json.dumps(rob))
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
    # The trained detector's rows follow, each under its own source, after the others.
    scenes_json(tmp_path / "metrics" / "detect" / "trained" / "street.json", 0.9, 0.95)
    scenes_json(tmp_path / "metrics" / "detect" / "trained" / "andrewmvd.json", 0.7, 0.75)
    lines = render(readme, tmp_path).splitlines()
    assert lines[-3:-1] == [
        "| andrewmvd test scenes (held-in), trained detector | 10 | 40 | 70.0 % / 35.0 % | 71.0 %"
        " | 75.0 % | 1.25 | 0.500 |",
        "| street (external), trained detector | 10 | 40 | 90.0 % / 45.0 % | 91.0 % | 95.0 % |"
        " 1.25 | 0.500 |",
    ]
    # ... and the fused pair's last.
    scenes_json(tmp_path / "metrics" / "detect" / "fused" / "street.json", 0.96, 0.97)
    lines = render(readme, tmp_path).splitlines()
    assert lines[-2].startswith("| street (external), YuNet + trained detector fused | 10 | 40 |")
    assert "96.0 % / 48.0 %" in lines[-2] and "trained detector |" in lines[-4]
